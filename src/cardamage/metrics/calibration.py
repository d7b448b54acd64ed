"""Calibration check: do the model's scores mean what they say?

A thresholded metric (F1, accuracy) says nothing about whether a 0.9 is right nine times in ten;
users who read scores as probabilities need that. The reliability curve bins the scores and sets
each bin's mean score against how often it was right; the expected calibration error (ECE) is
the gap averaged over the bins, weighted by how many scores fell in each, and the maximum
calibration error (MCE) is the worst bin's gap.

Bins are sklearn's "uniform" ones (``calibration_curve``'s edges and edge rule), so the curve
agrees with it; the binning is done here because ``calibration_curve`` drops empty bins and
returns no counts, which the ECE and a reader judging a bin's noise both need.
"""

from __future__ import annotations

import numpy as np


def reliability(
    y_true: np.ndarray, y_score: np.ndarray, bins: int = 10, *, multiclass: bool
) -> dict:
    """Reliability curve, ECE and MCE of one task's predictions, as plain JSON-ready values.

    ``y_true`` is one-/multi-hot (n, L) in label order, ``y_score`` probabilities (n, L).
    Multiclass: each image's top-class score against whether that class is the true one (the
    question "how sure, and how often right"). Multilabel: every label's score against whether
    the label is present, all labels pooled (each is its own yes/no question).

    Returns ``edges`` (bins + 1), per-bin ``count``, ``confidence`` (mean score) and ``observed``
    (fraction right, or fraction positive), None for empty bins; ``ece``, ``mce`` and ``n``
    (scores binned).
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence, outcome = _pairs(np.asarray(y_true), np.asarray(y_score, dtype=float), multiclass)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ids = np.searchsorted(edges[1:-1], confidence)  # calibration_curve's rule: (a, b], [0, b]
    count = np.bincount(ids, minlength=bins)
    filled = count > 0
    mean_confidence = _per_bin(np.bincount(ids, weights=confidence, minlength=bins), count)
    observed = _per_bin(np.bincount(ids, weights=outcome, minlength=bins), count)
    gap = np.abs(observed - mean_confidence)[filled]
    return {
        "edges": edges.tolist(),
        "count": count.tolist(),
        "confidence": _listed(mean_confidence, filled),
        "observed": _listed(observed, filled),
        "ece": float(np.sum(gap * count[filled]) / confidence.size),
        "mce": float(gap.max()),
        "n": int(confidence.size),
    }


def _pairs(
    y_true: np.ndarray, y_score: np.ndarray, multiclass: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(score, 0/1 outcome) pairs, flat: the yes/no questions the scores answer."""
    if y_true.ndim != 2 or y_true.shape != y_score.shape or not y_true.size:
        raise ValueError(
            f"y_true {y_true.shape} and y_score {y_score.shape} must both be (n > 0, labels > 0)"
        )
    if not np.isfinite(y_score).all() or y_score.min() < 0 or y_score.max() > 1:
        raise ValueError("y_score must be probabilities in [0, 1]")
    if multiclass:
        top = y_score.argmax(axis=1)
        return y_score.max(axis=1), (y_true.argmax(axis=1) == top).astype(float)
    return y_score.ravel(), (y_true.ravel() > 0).astype(float)


def _per_bin(sums: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Bin means; empty bins get 0 here and are masked by the caller."""
    return np.divide(sums, count, out=np.zeros_like(sums), where=count > 0)


def _listed(values: np.ndarray, filled: np.ndarray) -> list[float | None]:
    return [float(v) if f else None for v, f in zip(values, filled, strict=True)]
