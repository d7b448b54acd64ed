"""Fitting the trust parts of a model at the end of training, from out-of-fold results only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardamage.config import TrustConfig
from cardamage.metrics.calibration import reliability
from cardamage.tasks import Task
from cardamage.trust.calibrators import calibrate, cross_fitted, fit_calibration
from cardamage.trust.distribution import DistributionCheck
from cardamage.trust.review import ReviewPolicy

Splits = Sequence[tuple[np.ndarray, np.ndarray]]


@dataclass
class Calibrated:
    #: per task: the calibration the model applies (empty when off)
    calibration: dict[str, dict]
    #: out-of-fold scores through it, on which thresholds are tuned
    scores: dict[str, np.ndarray]
    #: per task: ECE of the raw out-of-fold scores and of cross-fitted calibrated ones
    ece: dict[str, dict[str, float]]


def calibrate_out_of_fold(
    tasks: Sequence[Task],
    targets: dict[str, np.ndarray],
    oof: dict[str, np.ndarray],
    splits: Splits,
    cfg: TrustConfig,
) -> Calibrated:
    """Each task's calibration fitted on all out-of-fold scores; its ECE measured honestly, on
    scores calibrated by fits that did not see them (the other folds')."""
    if not cfg.calibrate:
        return Calibrated({}, oof, {})
    calibration, scores, ece = {}, {}, {}
    for task in tasks:
        y, raw = targets[task.name], oof[task.name]
        calibration[task.name] = fit_calibration(task, y, raw)
        scores[task.name] = calibrate(calibration[task.name], raw)
        after = cross_fitted(task, y, raw, splits)
        ece[task.name] = {
            "before": reliability(y, raw, multiclass=task.multiclass)["ece"],
            "after": reliability(y, after, multiclass=task.multiclass)["ece"],
        }
    return Calibrated(calibration, scores, ece)


def fit_distribution(
    features: np.ndarray, splits: Splits, cfg: TrustConfig
) -> DistributionCheck | None:
    if cfg.distribution == "off":
        return None
    return DistributionCheck.fit(
        np.asarray(features, dtype=np.float32), list(splits), cfg.distribution, cfg.coverage
    )


def fit_review(
    tasks: Sequence[Task],
    targets: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    cfg: TrustConfig,
) -> ReviewPolicy:
    """Per task, the confidence an answer needs to stand without review, chosen on the
    calibrated out-of-fold scores (on which the tasks' thresholds were tuned)."""
    return ReviewPolicy.fit(tasks, targets, scores, cfg.review_coverage, cfg.review_risk)


@dataclass(frozen=True)
class TrustChecks:
    """What a model ships to know when not to answer: the distribution check (None when off)
    and the confidence each task's answer needs to stand without review."""

    distribution: DistributionCheck | None
    review: ReviewPolicy

    def save(self, model_dir: Path) -> None:
        if self.distribution is not None:
            self.distribution.save(model_dir)
        self.review.save(model_dir)


def fit_trust_checks(
    features: np.ndarray,
    splits: Splits,
    tasks: Sequence[Task],
    targets: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    cfg: TrustConfig,
) -> TrustChecks:
    """Both checks fitted from the shipped model's training features and the calibrated
    out-of-fold scores. A fixed split's check is fitted on train with val as its reference,
    and the other way round: out-of-sample scores for every photo."""
    both_ways = splits if len(splits) > 1 else [splits[0], splits[0][::-1]]
    return TrustChecks(
        fit_distribution(features, both_ways, cfg), fit_review(tasks, targets, scores, cfg)
    )
