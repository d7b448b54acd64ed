"""How sure is the answer: selective prediction on calibrated confidence, per task.

A photo that passed the checks is answered; where the model's confidence in a task's decision
is under that task's threshold the answer is marked "needs review": a person should check it.
Confidence is the calibrated probability of the decision itself, so it is the one number a
person sees beside it: multiclass, the top class's probability; multilabel, the least certain
label's (its probability when found, one minus it when not). The thresholds are chosen at the
end of training on out-of-fold calibrated scores, for a target share of photos answered
without review (``coverage``) or a target error rate among them (``risk``): selective
classification (El-Yaniv and Wiener, 2010; Geifman and El-Yaniv, 2017).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardamage.errors import CardamageError
from cardamage.io import atomic_write_json
from cardamage.tasks import Task

REVIEW_FILE = "review.json"


def confidence(task: Task, scores: np.ndarray) -> np.ndarray:
    """Per photo (rows of ``scores``), the calibrated probability of the task's decision."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if task.multiclass:
        return scores.max(axis=1)
    found = scores >= np.asarray(task.thresholds)
    return np.where(found, scores, 1.0 - scores).min(axis=1)


def correct(task: Task, y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per photo, whether the decision is right: the top class, or every label (exact match)."""
    if task.multiclass:
        return scores.argmax(axis=1) == np.asarray(y_true).argmax(axis=1)
    found = scores >= np.asarray(task.thresholds)
    return (found == (np.asarray(y_true) > 0)).all(axis=1)


@dataclass(frozen=True)
class Confidence:
    """One task's confidence in one photo's decision, and the threshold it is held to."""

    task: str
    value: float
    threshold: float | None  # None: no review policy (every answer stands)

    @property
    def sure(self) -> bool:
        return self.threshold is None or self.value >= self.threshold

    @property
    def message(self) -> str | None:
        """Why a person should check it, in their words; None when sure."""
        if self.sure:
            return None
        return f"the {self.task.replace('_', ' ')} is uncertain: a person should check it"

    @property
    def detail(self) -> str | None:
        if self.sure:
            return None
        return f"confidence {self.value:.0%}, under {self.threshold:.0%}"

    def to_dict(self) -> dict:
        out = {"confidence": round(self.value, 4), "threshold": self.threshold, "sure": self.sure}
        if not self.sure:
            out |= {"message": self.message, "detail": self.detail}
        return out


class Reviewed:
    """A photo's or a claim's review verdict, from ``confidences``: per task, the confidence of
    its decision (none where there is no answer)."""

    @property
    def confidences(self) -> dict[str, Confidence]:
        raise NotImplementedError

    @property
    def unsure(self) -> list[Confidence]:
        """The decisions a person should check."""
        return [c for c in self.confidences.values() if not c.sure]

    @property
    def needs_review(self) -> bool:
        return bool(self.unsure)

    @property
    def review_reason(self) -> str | None:
        unsure = self.unsure
        return "; ".join(c.message for c in unsure) if unsure else None

    def trust_dict(self) -> dict:
        """The verdict as the API and the JSON outputs give it (a photo adds its usability)."""
        return {
            "needs_review": self.needs_review,
            "review_reason": self.review_reason,
            "confidence": {name: c.to_dict() for name, c in self.confidences.items()},
        }


@dataclass(frozen=True)
class ReviewPolicy:
    """Per task, the confidence an answer needs to stand without review."""

    thresholds: dict[str, float]
    #: what they were chosen for, and what they gave out of fold (coverage and risk per task)
    chosen_for: dict

    @classmethod
    def fit(
        cls,
        tasks: Sequence[Task],
        targets: Mapping[str, np.ndarray],
        scores: Mapping[str, np.ndarray],
        coverage: float,
        risk: float | None = None,
    ) -> ReviewPolicy:
        """Thresholds on out-of-fold calibrated scores: the ``risk`` target when given (the
        loosest threshold whose answered photos err at most that often), else ``coverage``."""
        thresholds, measured = {}, {}
        for task in tasks:
            conf = confidence(task, scores[task.name])
            right = correct(task, targets[task.name], scores[task.name])
            threshold = (
                _for_risk(conf, right, risk) if risk is not None else _for_coverage(conf, coverage)
            )
            kept = conf >= threshold
            thresholds[task.name] = round(float(threshold), 6)
            measured[task.name] = {
                "coverage": round(float(kept.mean()), 4),
                "risk": round(float(1 - right[kept].mean()), 4) if kept.any() else None,
                "risk_all": round(float(1 - right.mean()), 4),
            }
        target = {"risk": risk} if risk is not None else {"coverage": coverage}
        return cls(thresholds, {**target, "out_of_fold": measured})

    def judge(self, tasks: Sequence[Task], scores: Mapping[str, np.ndarray]) -> list[dict]:
        """Per photo of a batch, each task's Confidence."""
        pairs = [(t, confidence(t, scores[t.name])) for t in tasks]
        n = len(pairs[0][1]) if pairs else 0
        return [
            {t.name: Confidence(t.name, float(v[i]), self.thresholds.get(t.name)) for t, v in pairs}
            for i in range(n)
        ]

    def save(self, directory: Path) -> Path:
        path = Path(directory) / REVIEW_FILE
        atomic_write_json(path, {"thresholds": self.thresholds, "chosen_for": self.chosen_for})
        return path

    @classmethod
    def load(cls, directory: Path) -> ReviewPolicy:
        """The model's policy; one with no thresholds (every answer stands) for a model
        trained before it existed."""
        path = Path(directory) / REVIEW_FILE
        if not path.exists():
            return cls({}, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls({k: float(v) for k, v in data["thresholds"].items()}, data["chosen_for"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CardamageError(f"cannot read {path}: {e}") from None


def _for_coverage(conf: np.ndarray, coverage: float) -> float:
    """The confidence the most confident ``coverage`` share of photos reach."""
    return float(np.quantile(conf, 1.0 - coverage, method="lower"))


def _for_risk(conf: np.ndarray, right: np.ndarray, risk: float) -> float:
    """The lowest threshold whose answered photos err at most ``risk`` of the time; the
    highest confidence seen (almost nothing answered) when no threshold gets there."""
    order = np.argsort(-conf, kind="stable")
    errors = np.cumsum(~right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(errors <= risk)
    return float(conf[order][ok[-1]]) if len(ok) else float(conf.max())
