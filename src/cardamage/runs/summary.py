"""What a finished run reports about itself (summary.json), as typed objects.

Training builds a `RunSummary`; the report, the CLI and benchmarks read its attributes through
`RunDir.summary()`. Keys a run of an older version did not write take their defaults, and keys
a newer one adds are ignored, so every run directory stays readable.

Metric tables (`Metrics`) stay mappings: their keys depend on the task's kind and are those of
:func:`cardamage.metrics.classification.task_metrics`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from cardamage.metrics.classification import headline
from cardamage.tasks import Task

#: One task's metrics on one set of photos (accuracy, macro_f1, mAP, per-label tables...).
Metrics = dict[str, Any]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Headline(_Record):
    """The original project's number: accuracy per fold (binary accuracy when multi-label)."""

    metric: str
    per_fold: list[float]
    mean: float


class CalibrationSummary(_Record):
    """Expected calibration error of the out-of-fold scores, before and after calibration."""

    ece_before: float
    ece_after: float


class TaskSummary(_Record):
    kind: str
    headline: Headline
    per_fold: list[Metrics]
    out_of_fold: Metrics
    thresholds: dict[str, float]
    calibration: CalibrationSummary | None = None


class DistributionSummary(_Record):
    """The "unlike the training photos" check: its method and the share it was set to pass."""

    method: str
    coverage: float
    fitted_on: int


class ReviewMeasured(_Record):
    """One task's "needs review" threshold measured out of fold."""

    coverage: float
    risk: float | None = None
    risk_all: float


class ReviewSummary(_Record):
    """The confidence each task's answer needs to stand without review, and its target."""

    thresholds: dict[str, float] = {}
    coverage: float | None = None
    risk: float | None = None
    out_of_fold: dict[str, ReviewMeasured] = {}


class RunSummary(_Record):
    folds: int
    images: int
    best_fold: int
    tasks: dict[str, TaskSummary]
    final_model: Literal["refit", "best_fold", "fold_ensemble"] = "best_fold"
    val_split: bool = False
    distribution: DistributionSummary | None = None
    review: ReviewSummary | None = None
    test_images: int = 0
    #: training time, and when it ended (absent in runs of before either was recorded)
    seconds: float | None = None
    finished: datetime | None = None


def task_summary(
    task: Task,
    per_fold: list[Metrics],
    out_of_fold: Metrics,
    ece: dict[str, float] | None = None,
) -> TaskSummary:
    """One task's results: the original's headline per fold, every metric per fold and out of
    fold, its thresholds, and calibration's effect (``ece``: before and after) when fitted."""
    headlines = [headline(task, metrics) for metrics in per_fold]
    return TaskSummary(
        kind=str(task.kind),
        headline=Headline(
            metric="accuracy" if task.multiclass else "binary_accuracy",
            per_fold=headlines,
            mean=float(np.mean(headlines)),
        ),
        per_fold=per_fold,
        out_of_fold=out_of_fold,
        thresholds=dict(zip(task.labels, task.thresholds, strict=True)),
        calibration=None
        if ece is None
        else CalibrationSummary(ece_before=ece["before"], ece_after=ece["after"]),
    )
