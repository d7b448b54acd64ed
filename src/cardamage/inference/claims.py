"""Several photos of one car, one assessment: the rule every entry point uses.

A claim (an insurance claim, a fleet inspection) is a few photos of one car, each seeing part
of the damage. Severity is read as ordinal (a multiclass task's labels in their file order, the
no-damage label ``whole`` lowest): per photo, the probability that the car is at least each
level; across photos those probabilities are combined by a rule (``max`` by default, the best
of the three that ``bench/claims.py`` measures side by side on generated claims; ``noisy_or``
and ``mean``), and the claim's level is the highest one the combined probability makes more
likely than not. Multi-label tasks (locations,
damage types) are the union: a label is found when any photo finds it, with that evidence
(which photo, its score) kept. Photos that abstained (``Prediction.abstain``) or could not be
read are left out, each with its reason; a claim none of whose photos can be used has no
assessment (:class:`NoEvidence`).

Each decision is then held to the photos' review policy (``trust.review``): the claim's
confidence in it (multiclass: the one number shown beside it; multilabel: the least certain
label's, from the best photo scores) under the task's threshold means a person should check it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from cardamage.errors import CardamageError
from cardamage.tasks import Task
from cardamage.trust.review import Confidence, Reviewed, confidence

if TYPE_CHECKING:
    from cardamage.inference.photo_index.check import SeenBefore
    from cardamage.inference.predictor import Prediction

NO_DAMAGE = "whole"
#: Measured by bench/claims.py (two seeds, severity macro-F1 0.553 / 0.508 against noisy-OR's
#: 0.564 / 0.484 and the mean's 0.296 / 0.231): re-measure once probabilities are calibrated.
DEFAULT_RULE = "max"


#: Per-photo probabilities of one event (axis 0: photos) -> the claim's probability.
COMBINE = {
    # the car is that damaged unless every photo independently says it is not
    "noisy_or": lambda p: 1.0 - np.prod(1.0 - p, axis=0),
    "max": lambda p: p.max(axis=0),
    "mean": lambda p: p.mean(axis=0),
}
RULES = tuple(COMBINE)


class NoEvidence(CardamageError):
    """Every photo of a claim was declined or could not be read: nothing to assess it from.
    ``left_out``: (photo, reason) for each, so callers can still show every photo's result."""

    def __init__(self, claim: str, left_out: tuple[tuple[str, str], ...]):
        self.claim, self.left_out = claim, left_out
        n = len(left_out)
        super().__init__(
            f"claim '{claim}' not assessed: none of its {n} photo(s) could be used"
            if n
            else f"claim '{claim}' not assessed: no photos"
        )

    def reasons(self) -> str:
        """Each photo's reason, for a line of text (a CSV cell, a log)."""
        return "; ".join(f"{name}: {reason}" for name, reason in self.left_out)


@dataclass(frozen=True)
class ClaimPhoto:
    """One photo of a claim: its prediction, or why it has none (``error``)."""

    name: str
    prediction: Prediction | None = None
    error: str | None = None


@dataclass(frozen=True)
class Evidence:
    photo: str
    score: float

    def to_dict(self) -> dict:
        return {"photo": self.photo, "score": round(self.score, 6)}


@dataclass(frozen=True)
class ClaimTask:
    """One task's decision for the claim. ``scores``: multiclass, the combined distribution over
    labels; multilabel, each label's best photo score. ``at_least`` (multiclass): the combined
    probability that the car is at least each damaged level. ``evidence``: per decided label,
    the photos that support it, strongest first."""

    task: Task
    labels: tuple[str, ...]
    scores: dict[str, float]
    evidence: dict[str, tuple[Evidence, ...]]
    at_least: dict[str, float] = field(default_factory=dict)
    #: the decision held to the task's review threshold (set by assess_claim)
    review: Confidence | None = None

    @property
    def confidence(self) -> float:
        """Multiclass: the probability of the decision as it was made, that the car is at
        least that damaged (no damage: that it is not damaged at all); the one number shown
        beside it. Multilabel: the least certain label's (its best photo score when found, one
        minus it when not), as for one photo."""
        if not self.task.multiclass:
            scores = np.array([[self.scores[label] for label in self.task.labels]])
            return float(confidence(self.task, scores)[0])
        label = self.labels[0]
        return self.at_least.get(label, self.scores[label])

    def judged(self, threshold: float | None) -> ClaimTask:
        """The decision with its review verdict against ``threshold`` (None: no policy)."""
        return replace(self, review=Confidence(self.task.name, self.confidence, threshold))

    def to_dict(self) -> dict:
        evidence = {k: [e.to_dict() for e in v] for k, v in self.evidence.items()}
        scores = {k: round(v, 6) for k, v in self.scores.items()}
        if self.task.multiclass:
            label = self.labels[0]
            return {
                "kind": "multiclass",
                "label": label,
                "score": scores[label],
                "confidence": round(self.confidence, 6),
                "scores": scores,
                "at_least": {k: round(v, 6) for k, v in self.at_least.items()},
                "evidence": evidence,
            }
        return {
            "kind": "multilabel",
            "labels": list(self.labels),
            "scores": scores,
            "evidence": evidence,
        }


@dataclass(frozen=True)
class ClaimAssessment(Reviewed):
    """The claim's decision per task; ``photos``: the photos used, those that drove the decision
    first; ``left_out``: (photo, reason) for each photo that abstained or could not be read."""

    claim: str
    rule: str
    tasks: dict[str, ClaimTask]
    photos: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...]
    #: photos found in other claims (None: no photo index was asked)
    seen_before: SeenBefore | None = None

    @property
    def confidences(self) -> dict[str, Confidence]:
        """The tasks held to a review policy (none without one)."""
        return {name: t.review for name, t in self.tasks.items() if t.review}

    @property
    def partial(self) -> str | None:
        """'from 1 of 2 photos' when some were left out: said wherever the verdict is."""
        if not self.left_out:
            return None
        return f"from {len(self.photos)} of {len(self.photos) + len(self.left_out)} photos"

    def to_dict(self) -> dict:
        seen = {} if self.seen_before is None else {"seen_before": self.seen_before.to_dict()}
        return {
            "claim": self.claim,
            **seen,
            "rule": self.rule,
            "assessment": {name: t.to_dict() for name, t in self.tasks.items()},
            **self.trust_dict(),
            "photos": list(self.photos),
            "left_out": [{"photo": p, "reason": r} for p, r in self.left_out],
            "n_photos": len(self.photos) + len(self.left_out),
            "partial": self.partial,
        }


def levels(task: Task) -> list[int]:
    """The task's label indices from least to most damaged: ``whole`` first, then file order."""
    order = list(range(len(task.labels)))
    if NO_DAMAGE in task.labels:
        order.remove(task.labels.index(NO_DAMAGE))
        order.insert(0, task.labels.index(NO_DAMAGE))
    return order


def assess_claim(
    claim: str,
    photos: Sequence[ClaimPhoto],
    rule: str = DEFAULT_RULE,
    seen_before: SeenBefore | None = None,
) -> ClaimAssessment:
    """The one aggregation behind ``cardamage assess``, ``POST /v1/claims``, claim-level
    evaluation and the benchmark. Raises NoEvidence when no photo can be used.
    ``seen_before``: the photo index's answer, carried as is."""
    if rule not in COMBINE:
        raise CardamageError(f"unknown claim rule '{rule}' (one of: {', '.join(COMBINE)})")
    used = [p for p in photos if p.prediction is not None and not p.prediction.abstain]
    left_out = tuple(
        (p.name, p.error or (p.prediction.abstain_reason if p.prediction else None) or "declined")
        for p in photos
        if p not in used
    )
    if not used:
        raise NoEvidence(claim, left_out)
    names = [p.name for p in used]
    first = used[0].prediction
    tasks = {}
    for name, task_prediction in first.tasks.items():
        scores = np.stack([p.prediction.tasks[name].scores for p in used]).astype(np.float64)
        decide = _ordinal if task_prediction.task.multiclass else _union
        policy = first.review.get(name)  # every photo is held to the model's one policy
        threshold = policy.threshold if policy else None
        tasks[name] = decide(task_prediction.task, names, scores, rule).judged(threshold)
    ranked = tuple(sorted(names, key=lambda n: _support(tasks.values(), n), reverse=True))
    return ClaimAssessment(claim, rule, tasks, ranked, left_out, seen_before)


def _ordinal(task: Task, names: list[str], scores: np.ndarray, rule: str) -> ClaimTask:
    """P(at least level k) per photo, combined, then differenced back into a distribution; the
    decision is the highest level with a combined probability of at least one half."""
    order = levels(task)
    ranked = scores[:, order]  # columns from least to most damaged
    per_photo = np.cumsum(ranked[:, ::-1], axis=1)[:, ::-1]  # P(>= level), per photo
    at_least = np.concatenate([[1.0], COMBINE[rule](per_photo[:, 1:])])
    at_least = np.minimum.accumulate(np.clip(at_least, 0.0, 1.0))
    exact = at_least - np.append(at_least[1:], 0.0)
    level = max(k for k in range(len(order)) if k == 0 or at_least[k] >= 0.5)
    label = task.labels[order[level]]
    support = per_photo[:, level] if level else ranked[:, 0]
    return ClaimTask(
        task,
        (label,),
        {task.labels[i]: float(exact[k]) for k, i in enumerate(order)},
        {label: _evidence(names, support)},
        {task.labels[i]: float(at_least[k]) for k, i in enumerate(order) if k},
    )


def _union(task: Task, names: list[str], scores: np.ndarray, rule: str) -> ClaimTask:
    """A label is found when any photo's score reaches its threshold (one photo of four that
    sees a broken window is enough); its claim score is the best photo's."""
    del rule  # the union is the rule for labels: a damage one photo shows is on the car
    thresholds = np.asarray(task.thresholds)
    found = [j for j in range(len(task.labels)) if (scores[:, j] >= thresholds[j]).any()]
    evidence = {}
    for j in found:
        over = scores[:, j] >= thresholds[j]
        evidence[task.labels[j]] = _evidence(
            [n for n, ok in zip(names, over, strict=True) if ok], scores[over, j]
        )
    best = scores.max(axis=0)
    return ClaimTask(
        task,
        tuple(task.labels[j] for j in found),
        {label: float(s) for label, s in zip(task.labels, best, strict=True)},
        evidence,
    )


def _evidence(names: Sequence[str], scores: np.ndarray) -> tuple[Evidence, ...]:
    pairs = sorted(zip(names, scores.tolist(), strict=True), key=lambda p: p[1], reverse=True)
    return tuple(Evidence(name, float(score)) for name, score in pairs)


def _support(tasks: Iterable[ClaimTask], photo: str) -> tuple[float, float]:
    """How much a photo drove the decision: its support for the multiclass decisions (severity),
    then the sum of its scores for the labels it helped find (sorting is stable: ties keep the
    input order)."""
    ordinal = found = 0.0
    for task in tasks:
        scores = [
            e.score for label in task.labels for e in task.evidence[label] if e.photo == photo
        ]
        if task.task.multiclass:
            ordinal += sum(scores)
        else:
            found += sum(scores)
    return ordinal, found
