"""Per-task metrics: the original project's headline accuracy plus honest ones.

The original reported only Keras accuracies, which flatter imbalanced classes and sparse
multilabel targets (predicting "nothing" scores well). Per-label precision/recall/F1, AP/AUC
and a confusion matrix show what the model really does. Every value is plain Python, so a
metrics dict goes straight into JSON.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from cardamage.tasks import Task, TaskKind

#: Keras BinaryAccuracy's cut (``score > 0.5``): fixed, whatever the tuned thresholds, so the
#: headline stays comparable with the original project.
KERAS_BINARY_THRESHOLD = 0.5

#: Task kind -> (metrics key, Keras metric name) of the number the original project reported.
_HEADLINE = {
    TaskKind.MULTICLASS: ("accuracy", "CategoricalAccuracy"),
    TaskKind.MULTILABEL: ("binary_accuracy", "BinaryAccuracy"),
}


def headline(task: Task, metrics: dict) -> float:
    """The metric the original reported, so old and new runs compare at a glance."""
    return metrics[_HEADLINE[task.kind][0]]


def headline_name(task: Task) -> str:
    """Keras name of :func:`headline`: ``CategoricalAccuracy`` or ``BinaryAccuracy``."""
    return _HEADLINE[task.kind][1]


def decide(task: Task, y_score: np.ndarray) -> np.ndarray:
    """Boolean decisions (n, L): argmax one-hot (multiclass) or ``score >= threshold`` per label."""
    y_score = np.asarray(y_score, dtype=float)
    if task.multiclass:
        return np.eye(len(task.labels), dtype=bool)[y_score.argmax(axis=1)]
    return y_score >= np.asarray(task.thresholds)


def task_metrics(task: Task, y_true: np.ndarray, y_score: np.ndarray) -> dict:
    """JSON-serialisable metrics of one task.

    y_true one-/multi-hot (n, L) in label order, y_score probabilities (n, L).
    """
    y_true, y_score = _validated(task, y_true, y_score)
    y_pred = decide(task, y_score).astype(int)
    if task.multiclass:
        return _multiclass_metrics(task, y_true, y_pred)
    return _multilabel_metrics(task, y_true, y_score, y_pred)


def tune_thresholds(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    min_threshold: float = 0.05,
    max_threshold: float = 0.95,
) -> np.ndarray:
    """Per-label thresholds maximising F1 on (out-of-fold) predictions; 0.5 where no positive.

    The F1-best cut is the lowest score still called positive; the threshold is put midway
    between it and the next-lower score, which keeps the same decisions on these predictions
    but leaves a margin on both sides for unseen images instead of sitting on a training score.
    """
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    return np.array(
        [
            _tune_one(y_true[:, j], y_score[:, j], min_threshold, max_threshold)
            for j in range(y_true.shape[1])
        ]
    )


def _tune_one(truth: np.ndarray, score: np.ndarray, lo: float, hi: float) -> float:
    if not truth.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(truth, score)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    best = thresholds[np.argmax(f1[:-1])]  # the curve's last point (recall 0) has no threshold
    below = score[score < best]
    if below.size:
        best = (best + below.max()) / 2
    return float(np.clip(best, lo, hi))


def _validated(
    task: Task, y_true: np.ndarray, y_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=float)
    expected = (len(y_true), len(task.labels))
    if y_true.ndim != 2 or not len(y_true) or y_true.shape != expected or y_score.shape != expected:
        raise ValueError(
            f"task '{task.name}': y_true {y_true.shape} and y_score {y_score.shape} "
            f"must both be (n > 0, {len(task.labels)})"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"task '{task.name}': y_true must be 0/1")
    if task.multiclass and not (y_true.sum(axis=1) == 1).all():
        raise ValueError(f"multiclass task '{task.name}': every y_true row must be one-hot")
    return y_true.astype(int), y_score


def _multiclass_metrics(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    true_idx, pred_idx = y_true.argmax(axis=1), y_pred.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(true_idx, pred_idx)),
        "balanced_accuracy": _balanced_accuracy(true_idx, pred_idx),
        "macro_f1": _macro_f1(y_true, y_pred),
        "confusion_matrix": confusion_matrix(
            true_idx, pred_idx, labels=range(len(task.labels))
        ).tolist(),
        "per_label": _per_label(task, y_true, y_pred),
        "n": len(y_true),
    }


def _multilabel_metrics(
    task: Task, y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray
) -> dict:
    per_label = _per_label(task, y_true, y_pred)
    for j, stats in enumerate(per_label.values()):
        stats.update(_ranking(y_true[:, j], y_score[:, j]), threshold=float(task.thresholds[j]))
    aps = [s["average_precision"] for s in per_label.values() if s["average_precision"] is not None]
    keras_pred = (y_score > KERAS_BINARY_THRESHOLD).astype(int)
    return {
        "binary_accuracy": float(accuracy_score(y_true.ravel(), keras_pred.ravel())),
        "macro_f1": _macro_f1(y_true, y_pred),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "mAP": float(np.mean(aps)) if aps else None,
        "exact_match": float(accuracy_score(y_true, y_pred)),  # subset accuracy on indicator rows
        "per_label": per_label,
        "n": len(y_true),
    }


def _balanced_accuracy(true_idx: np.ndarray, pred_idx: np.ndarray) -> float:
    """Mean recall over the classes present in y_true.

    A class that is predicted but absent from y_true has no recall; sklearn warns about it and
    leaves it out, which is the definition we want, so that one warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(true_idx, pred_idx))


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-F1 over labels present in y_true or predicted (sklearn's multiclass default).

    A label neither present nor predicted in a fold has no F1 to speak of; counting it as 0
    would punish a correct "never" and make folds with a rare label missing incomparable.
    """
    seen = np.flatnonzero(y_true.any(axis=0) | y_pred.any(axis=0))
    if not seen.size:
        return 0.0  # nothing to score: zero_division=0, as for each label
    return float(f1_score(y_true, y_pred, labels=seen, average="macro", zero_division=0))


def _per_label(task: Task, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, dict]:
    """Per-label P/R/F1/support; on one-hot rows these equal sklearn's multiclass per-class ones."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    return {
        label: {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "support": int(support[j]),
        }
        for j, label in enumerate(task.labels)
    }


def _ranking(truth: np.ndarray, score: np.ndarray) -> dict:
    """ROC AUC and AP of one label; None (not 0) where y_true lacks positives or negatives.

    Without both classes AUC is undefined and AP is either undefined or 1 whatever the scores,
    so neither says anything about the model.
    """
    if truth.all() or not truth.any():
        return {"roc_auc": None, "average_precision": None}
    return {
        "roc_auc": float(roc_auc_score(truth, score)),
        "average_precision": float(average_precision_score(truth, score)),
    }


def with_tuned_thresholds(
    tasks: Sequence[Task], targets: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]
) -> list[Task]:
    """Multi-label tasks with each label's threshold tuned for F1 on (out-of-fold) ``scores``;
    a multiclass task decides by its largest score and keeps its own."""
    return [
        t if t.multiclass else t.with_thresholds(tune_thresholds(targets[t.name], scores[t.name]))
        for t in tasks
    ]
