"""Scores when the model may decline or ask for review: how much it answers, and how well.

Two questions, reported apart: which photos were declined (not usable photos of a car) and,
of those answered, which were left to stand without review (confident enough). A claims
pipeline sends the others to a person, so what matters is the coverage (the share answered,
the share answered without review) and the accuracy on each share, beside the accuracy on
everything. The risk-coverage
curve (El-Yaniv and Wiener, 2010) says what a stricter or looser policy would buy: photos sorted
by the model's confidence (its top class's calibrated probability), the error rate among the
most confident share, for every share.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from cardamage.metrics.classification import task_metrics
from cardamage.tasks import Task

#: Coverages the curve is sampled at (20 points is plenty for a plot and a table).
CURVE_POINTS = 20
#: The metrics compared between all photos and the answered ones.
COMPARED = ("accuracy", "macro_f1", "mAP")


def selective_report(
    tasks: Sequence[Task],
    targets: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    abstain: np.ndarray,
    reasons: Sequence[str],
    review: dict[str, np.ndarray] | None = None,
) -> dict:
    """Coverage, per-task metrics on all vs answered photos, why photos were declined, and a
    risk-coverage curve per multiclass task; with ``review`` (per task, whether each photo's
    answer needs review), the same on the answers that stand without review."""
    answered = ~np.asarray(abstain, dtype=bool)
    report = {
        "n": len(answered),
        "answered": int(answered.sum()),
        "coverage": float(answered.mean()) if len(answered) else 0.0,
        "reasons": dict(Counter(reasons).most_common()),
        "tasks": {},
    }
    for task in tasks:
        y, s = targets[task.name], scores[task.name]
        entry = {"all": _compared(task, y, s)}
        if answered.any():
            entry["answered"] = _compared(task, y[answered], s[answered])
        if review is not None:
            sure = answered & ~review[task.name]
            entry["sure"] = int(sure.sum())
            if sure.any():
                entry["without_review"] = _compared(task, y[sure], s[sure])
        if task.multiclass:
            entry["risk_coverage"] = risk_coverage(y, s)
        report["tasks"][task.name] = entry
    return report


def _compared(task: Task, y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    metrics = task_metrics(task, y, s)
    return {k: metrics[k] for k in COMPARED if k in metrics}


def risk_coverage(y_true: np.ndarray, y_score: np.ndarray) -> dict[str, list[float]]:
    """Error rate among the most confident photos, for coverages from 1/CURVE_POINTS to 1."""
    confidence = y_score.max(axis=1)
    wrong = (y_score.argmax(axis=1) != y_true.argmax(axis=1)).astype(float)
    order = np.argsort(-confidence, kind="stable")
    cumulative = np.cumsum(wrong[order]) / np.arange(1, len(order) + 1)
    coverage = np.linspace(1 / CURVE_POINTS, 1.0, CURVE_POINTS)
    kept = np.maximum(1, np.round(coverage * len(order)).astype(int))
    return {"coverage": coverage.round(4).tolist(), "risk": cumulative[kept - 1].round(4).tolist()}


def reason_kinds(messages: Sequence[str]) -> list[str]:
    """The kind of each problem, for counting: 'too blurred to judge: retake holding still' ->
    'too blurred to judge'."""
    return [message.split(":")[0] for message in messages]
