"""The run directory: the unit of output. Everything a run made, with the exact config and
package versions, so any result can be traced, reproduced and resumed.

`RunDir` owns every file name and format in it: training writes through it, the report and
resume read through it, so no caller spells a file name or parses a file itself.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from cardamage.config import TrainConfig, format_validation_error, load_train_config
from cardamage.data.leakage import Leak, write_leaks
from cardamage.data.manifest import (
    IMAGE_COLUMN,
    LABEL_SEPARATOR,
    Manifest,
    write_manifest,
    write_problems,
)
from cardamage.errors import CardamageError
from cardamage.io import atomic_path, atomic_write_json, atomic_write_text
from cardamage.metrics.label_review import Issue, read_issues, write_issues
from cardamage.metrics.results import write_results_txt, write_summary_json
from cardamage.model.metadata import ModelMeta
from cardamage.runs.summary import Metrics, RunSummary
from cardamage.tasks import Task

#: What `cardamage evaluate --out DIR` writes in DIR (a run's own is `heldout/`).
EVALUATION_FILE = "evaluation.json"
#: A fold's validation scores averaged over every cached view (label review ranks by them).
VIEW_SCORES = "view_scores.npz"
#: Curves plot_history draws per task.
CURVE_METRICS = ("accuracy", "loss")


@dataclass(frozen=True)
class FoldFiles:
    """What a finished fold left: its metrics, validation scores (of the photo as it is, and
    averaged over every cached view) and the epochs it chose."""

    metrics: dict[str, dict]
    scores: dict[str, np.ndarray]
    schedule: dict
    view_scores: dict[str, np.ndarray]


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # ------------------------------------------------------------ names

    config_file = property(lambda self: self.path / "config.json")
    versions_file = property(lambda self: self.path / "versions.json")
    manifest_file = property(lambda self: self.path / "manifest.csv")
    skipped_file = property(lambda self: self.path / "skipped.csv")
    folds_file = property(lambda self: self.path / "folds.json")
    oof_file = property(lambda self: self.path / "oof_predictions.csv")
    summary_file = property(lambda self: self.path / "summary.json")
    report_file = property(lambda self: self.path / "report.html")
    label_issues_file = property(lambda self: self.path / "label_issues.csv")
    curves_dir = property(lambda self: self.path / "curves")
    model_dir = property(lambda self: self.path / "model")
    final_dir = property(lambda self: self.path / "final")
    heldout_dir = property(lambda self: self.path / "heldout")
    heldout_claims_dir = property(lambda self: self.path / "heldout_claims")
    #: The data's test split (tidy manifest), scored by the final model once training ends.
    test_file = property(lambda self: self.path / "test.csv")
    #: Near-identical photo pairs across splits (columns LEAK_COLUMNS).
    leakage_file = property(lambda self: self.path / "leakage.csv")

    def results_file(self, task: str) -> Path:
        return self.path / f"results_{task}.txt"

    def fold_dir(self, index: int) -> Path:
        return self.path / "folds" / f"fold_{index}"

    def fold_model_dir(self, index: int) -> Path:
        return self.fold_dir(index) / "model"

    def curve_file(self, fold: int, task: str, metric: str) -> Path:
        return self.curves_dir / f"fold{fold}_{task}_{metric}.png"

    # ------------------------------------------------------------ starting and resuming

    def prepare(self, overwrite: bool) -> None:
        """Never touch an existing run unless asked: a typo must not destroy last week's
        results."""
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise CardamageError(
                    f"run directory {self.path} already exists and is not empty: "
                    f"choose another --out, pass --overwrite, or --resume it"
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def record_inputs(
        self,
        cfg: TrainConfig,
        manifest: Manifest,
        problems: list,
        splits: list,
        versions: dict[str, str],
    ) -> None:
        atomic_write_json(self.versions_file, versions)
        write_manifest(manifest, self.manifest_file, cfg.build_tasks())
        if problems:
            write_problems(problems, self.skipped_file)
        atomic_write_json(self.folds_file, _fold_records(manifest, splits))
        # written last: its presence marks a run that can be resumed
        atomic_write_json(self.config_file, cfg.model_dump(mode="json"))

    def record_splits(self, test: Manifest, tasks: list[Task], leaks: Sequence[Leak]) -> None:
        """The test rows, kept apart from everything trained on, and the leakage pairs."""
        if len(test):
            write_manifest(test, self.test_file, tasks)
        if leaks:
            write_leaks(leaks, self.leakage_file)

    def resume_config(self) -> TrainConfig:
        """The config a run started with: a resumed run must train exactly what it began."""
        if not self.config_file.exists():
            raise CardamageError(
                f"cannot resume {self.path}: no {self.config_file.name} (was it a cardamage run?)"
            )
        return load_train_config(self.config_file, {"out": self.path})

    def check_same_folds(self, data: Path, manifest: Manifest, splits: list) -> None:
        recorded = json.loads(self.folds_file.read_text(encoding="utf-8"))
        if recorded != _fold_records(manifest, splits):
            raise CardamageError(
                f"cannot resume {self.path}: the data in {data} changed since the run started"
            )

    @property
    def finished(self) -> bool:
        """summary.json is written once the final model is saved: the run has nothing left."""
        return self.summary_file.is_file()

    def sweep_temporaries(self) -> None:
        """A killed process skips its cleanup: remove the temporaries its atomic writes left."""
        for leftover in self.path.rglob(".tmp.*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------ folds

    def write_fold(self, index: int, files: FoldFiles) -> None:
        """Scores, schedule, then metrics.json: written last, it marks the fold finished."""
        fold_dir = self.fold_dir(index)
        with atomic_path(fold_dir / "scores.npz") as tmp:
            np.savez(tmp, **files.scores)
        with atomic_path(fold_dir / VIEW_SCORES) as tmp:
            np.savez(tmp, **files.view_scores)
        atomic_write_json(fold_dir / "schedule.json", files.schedule)
        atomic_write_json(fold_dir / "metrics.json", files.metrics)

    def finished_fold(self, index: int) -> FoldFiles | None:
        """A fold finished before an interruption, or None (a half-written fold is cleared)."""
        fold_dir = self.fold_dir(index)
        if not (fold_dir / "metrics.json").exists():
            shutil.rmtree(fold_dir, ignore_errors=True)
            return None
        scores = _read_npz(fold_dir / "scores.npz")
        views = fold_dir / VIEW_SCORES  # absent in runs from before label review averaged views
        return FoldFiles(
            _read_json(fold_dir / "metrics.json"),
            scores,
            _read_json(fold_dir / "schedule.json"),
            _read_npz(views) if views.is_file() else scores,
        )

    # ------------------------------------------------------------ results

    def write_oof(self, manifest: Manifest, tasks: list[Task], oof: dict[str, np.ndarray]) -> None:
        """Every image's out-of-fold scores: the raw material for error analysis."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([IMAGE_COLUMN] + [f"{t.name}:{label}" for t in tasks for label in t.labels])
        for i, image in enumerate(manifest.images):
            scores = [f"{oof[t.name][i, j]:.4f}" for t in tasks for j in range(len(t.labels))]
            writer.writerow([image, *scores])
        atomic_write_text(self.oof_file, buffer.getvalue())

    def read_oof(self, tasks: list[Task]) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
        """Images and per-task (n, labels) score matrices, rows in the file's order."""
        rows = _read_csv(self.oof_file)
        if not rows:
            raise ValueError(f"{self.oof_file.name} has no rows")
        images = tuple(row[IMAGE_COLUMN] for row in rows)
        scores = {
            t.name: np.array(
                [[float(row[f"{t.name}:{label}"]) for label in t.labels] for row in rows]
            )
            for t in tasks
        }
        return images, scores

    def read_truth(self, tasks: list[Task], images: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Targets of ``images`` from the run's manifest (tidy format: ``;``-joined labels)."""
        by_image = {row[IMAGE_COLUMN]: row for row in _read_csv(self.manifest_file)}
        return {
            t.name: t.encode(
                [
                    [v for v in by_image[image][t.name].split(LABEL_SEPARATOR) if v]
                    for image in images
                ]
            )
            for t in tasks
        }

    def write_results(
        self,
        tasks: Sequence[Task],
        per_fold: Sequence[dict[str, Metrics]],
        out_of_fold: dict[str, Metrics],
        best_fold: int,
    ) -> None:
        """Each task's results_<task>.txt: the original's per-fold accuracy, then the rest."""
        for task in tasks:
            fold_metrics = [metrics[task.name] for metrics in per_fold]
            write_results_txt(
                self.results_file(task.name),
                task,
                fold_metrics,
                out_of_fold[task.name],
                best_fold - 1,
            )

    def write_summary(self, summary: RunSummary) -> None:
        write_summary_json(self.summary_file, summary.model_dump(mode="json", exclude_none=True))

    def summary(self) -> RunSummary:
        """summary.json, typed; a file that is not one names itself and what is wrong."""
        try:
            return RunSummary.model_validate_json(self.summary_file.read_bytes())
        except ValidationError as e:
            raise CardamageError(format_validation_error(e, str(self.summary_file))) from None

    def config(self) -> TrainConfig:
        return load_train_config(self.config_file, {})

    def model_meta(self) -> ModelMeta:
        return ModelMeta.read(self.model_dir)

    def finished_at(self, summary: RunSummary) -> datetime:
        """When the run ended: recorded in the summary, else the summary file's time."""
        if summary.finished is not None:
            return summary.finished
        return datetime.fromtimestamp(self.summary_file.stat().st_mtime)

    def curves(self, folds: int, task: str) -> list[tuple[int, str, Path]]:
        """(fold, metric, PNG) of the training curves drawn for ``task``, by fold."""
        found = (
            (fold, metric, self.curve_file(fold, task, metric))
            for fold in range(1, folds + 1)
            for metric in CURVE_METRICS
        )
        return [item for item in found if item[2].is_file()]

    def heldout(self) -> dict | None:
        """The run's held-out evaluation (`cardamage evaluate`), or None if never evaluated."""
        return read_evaluation(self.heldout_dir)

    def heldout_claims(self) -> dict | None:
        """The run's evaluation on held-out claims (per photo and per claim), or None."""
        return read_evaluation(self.heldout_claims_dir)

    def label_issues(self) -> list[Issue] | None:
        """The issues label_issues.csv lists, or None when the run has none."""
        path = self.label_issues_file
        return read_issues(path) if path.is_file() else None

    def write_label_issues(self, issues: Sequence[Issue]) -> None:
        write_issues(self.label_issues_file, issues)


def write_evaluation(
    directory: Path,
    data: Path,
    metrics: dict[str, dict],
    claims: dict | None = None,
    abstention: dict | None = None,
) -> Path:
    """A held-out evaluation's metrics per task, with the labelled set they came from; the
    claim-level ones beside (``claims``: counts, rule, truth and metrics per task) when the set
    has claims, and the abstention report (coverage, metrics on the answered photos)."""
    path = Path(directory) / EVALUATION_FILE
    record = {"data": str(data), "tasks": metrics}
    if claims is not None:
        record["claims"] = claims
    if abstention is not None:
        record["abstention"] = abstention
    write_summary_json(path, record)
    return path


def read_evaluation(directory: Path) -> dict | None:
    path = Path(directory) / EVALUATION_FILE
    return _read_json(path) if path.is_file() else None


def _fold_records(manifest: Manifest, splits: list) -> list[dict]:
    return [
        {"fold": i, "validation": [manifest.images[j] for j in val]}
        for i, (_, val) in enumerate(splits, start=1)
    ]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return {name: saved[name] for name in saved.files}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
