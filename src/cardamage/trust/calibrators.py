"""Scores that mean what they say: fitted on out-of-fold predictions, applied after any engine.

Multiclass tasks get temperature scaling (Guo et al., 2017): one parameter, the ranking of the
classes kept, so accuracy does not move. Multilabel tasks get Platt scaling per label (a
logistic regression on the score's logit): each label is its own yes/no question with its own
over- or under-confidence; a label with one outcome only in the training data keeps its scores.
The raw probabilities are the input, so a calibration fits any model that outputs them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from scipy.special import expit, logit, softmax

from cardamage.tasks import Task

_EPS = 1e-7
#: Temperatures searched (log-uniformly): from sharpening 20x to softening 20x.
_LOG_T_BOUNDS = (-3.0, 3.0)


def fit_calibration(task: Task, y_true: np.ndarray, scores: np.ndarray) -> dict:
    """The task's calibration as JSON-ready parameters (stored in model.json)."""
    if task.multiclass:
        return {"method": "temperature", "temperature": _fit_temperature(y_true, scores)}
    a, b = zip(
        *(_fit_platt(y_true[:, j], scores[:, j]) for j in range(scores.shape[1])), strict=True
    )
    return {"method": "platt", "a": list(a), "b": list(b)}


def calibrate(calibration: Mapping | None, scores: np.ndarray) -> np.ndarray:
    """Scores (n, labels) through a task's calibration; None leaves them as they are."""
    if not calibration:
        return scores
    if calibration["method"] == "temperature":
        log_p = np.log(np.clip(scores, _EPS, 1.0))
        return softmax(log_p / calibration["temperature"], axis=1).astype(np.float32)
    z = logit(np.clip(scores, _EPS, 1 - _EPS))
    return expit(np.asarray(calibration["a"]) * z + np.asarray(calibration["b"])).astype(np.float32)


def cross_fitted(
    task: Task,
    y_true: np.ndarray,
    scores: np.ndarray,
    splits: Iterable[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """Out-of-fold scores calibrated by calibrations fitted on the other folds: an honest
    measure of what calibration does for photos it was not fitted on."""
    out = np.array(scores, dtype=np.float32, copy=True)
    for train, val in splits:
        out[val] = calibrate(fit_calibration(task, y_true[train], scores[train]), scores[val])
    return out


def _fit_temperature(y_true: np.ndarray, scores: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar  # fitting only: a server applies, never fits

    log_p = np.log(np.clip(scores, _EPS, 1.0))
    truth = np.asarray(y_true).argmax(axis=1)

    def nll(log_t: float) -> float:
        z = log_p / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(z)), truth] - np.log(np.exp(z).sum(axis=1))).mean())

    found = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded")
    return round(float(np.exp(found.x)), 6)


def _fit_platt(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    y = (np.asarray(y) > 0).astype(int)
    if y.min() == y.max():
        return 1.0, 0.0
    from sklearn.linear_model import LogisticRegression  # ~100 MB a server need not hold

    z = logit(np.clip(score, _EPS, 1 - _EPS)).reshape(-1, 1)
    fit = LogisticRegression(C=1e4).fit(z, y)  # nearly unpenalised: two parameters, many photos
    slope = float(fit.coef_[0, 0])
    if slope <= 0:  # scores that rank the label backwards: better left alone than inverted
        return 1.0, 0.0
    return round(slope, 6), round(float(fit.intercept_[0]), 6)
