"""What a run trains and validates on, and what it keeps for the end: the data's splits.

``train`` and ``val`` rows are cross-validated together, or with ``--val-split`` ``val`` is the
one fixed validation set; ``test`` rows are cut off here, before features, folds, thresholds or
calibration see them, and are only scored by the final model (``cardamage.reports.heldout``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardamage.config import TaskConfig, TrainConfig
from cardamage.data.folds import Split, make_folds
from cardamage.data.leakage import Leak, leak_report
from cardamage.data.manifest import SPLIT_COLUMN, TEST, TRAIN, VAL, Manifest, Problem
from cardamage.data.sources import load_labelled
from cardamage.errors import CardamageError
from cardamage.tasks import Task


@dataclass(frozen=True)
class RunData:
    #: The config with the tasks the data labels (inferred from class folders), as recorded.
    cfg: TrainConfig
    tasks: list[Task]
    #: The rows trained and validated on: train and val.
    manifest: Manifest
    #: The test rows: scored once, by the final model.
    test: Manifest
    splits: list[Split]
    problems: tuple[Problem, ...]
    notes: tuple[str, ...]
    leaks: tuple[Leak, ...]

    @property
    def fixed_validation(self) -> bool:
        return self.cfg.data.val_split

    def first_lines(self, listed: Path | None = None) -> list[str]:
        """What the user should know before training starts: the split, notes, leakage (all
        pairs ``listed`` in that file)."""
        counts = Counter(self.manifest.splits or ())
        parts = ", ".join(f"{split} {counts[split]}" for split in (TRAIN, VAL) if counts[split])
        how = "1 fixed validation split" if self.fixed_validation else f"{len(self.splits)} folds"
        line = f"{len(self.manifest)} images" + (f" ({parts})" if parts else "") + f", {how}"
        lines = [line, *self.notes]
        if len(self.test):
            lines.append(f"test: {len(self.test)} photos set apart, scored by the final model")
        if self.manifest.splits is not None or len(self.test):
            lines.append(leak_report(self.leaks, listed))
        return lines


def read_run_data(cfg: TrainConfig) -> RunData:
    """The data ``cfg`` names, its test rows set apart, the folds (or fixed split) made."""
    data = cfg.data
    if data.data.is_dir() and data.images is not None:
        raise CardamageError(
            f"--images is a manifest's image root; the class folders in {data.data} are their "
            "own: drop --images"
        )
    configured = "tasks" in data.model_fields_set
    found = load_labelled(
        data.data,
        cfg.image_root,
        cfg.build_tasks(),
        skip_bad=data.skip_bad,
        task=data.task if "task" in data.model_fields_set or not configured else None,
        configured=configured,
        fixed_val=data.val_split,
    )
    if found.folders:
        cfg = _with_tasks(cfg, found.tasks)
    if data.val_split and "final_model" not in cfg.run.model_fields_set:
        # the model validated on val ships, unless a final model is asked for
        cfg = cfg.model_copy(
            update={"run": cfg.run.model_copy(update={"final_model": "best_fold"})}
        )
    manifest = found.manifest.subset(found.manifest.rows_in(TRAIN, VAL))
    test = found.manifest.subset(found.manifest.rows_in(TEST))
    if not len(manifest):
        raise CardamageError(f"{data.data}: every photo is in the test split: nothing to train on")
    tasks = list(found.tasks)
    splits = (
        fixed_split(manifest, str(data.data))
        if data.val_split
        else make_folds(manifest, tasks, data.folds, cfg.run.seed)
    )
    return RunData(cfg, tasks, manifest, test, splits, found.problems, found.notes, found.leaks)


def fixed_split(manifest: Manifest, source: str) -> list[Split]:
    """The one split ``--val-split`` asks for: train rows against val rows."""
    train, val = manifest.rows_in(TRAIN), manifest.rows_in(VAL)
    if manifest.splits is None or len(val) < 2 or not len(train):
        raise CardamageError(
            f"--val-split needs train photos and at least 2 val photos in {source} (a 'val', "
            f"'valid' or 'validation' folder beside 'train', or a '{SPLIT_COLUMN}' column); "
            f"found {len(train) if manifest.splits is not None else 'no split'} train, "
            f"{len(val)} val"
        )
    return [(train, val)]


def _with_tasks(cfg: TrainConfig, tasks: tuple[Task, ...]) -> TrainConfig:
    """``cfg`` naming the tasks the class folders gave, labels and all, so the run records
    them and a resumed run reads the folders the same way."""
    data = cfg.data.model_copy(
        update={"tasks": tuple(TaskConfig.of(t) for t in tasks), "task": tasks[0].name}
    )
    return cfg.model_copy(update={"data": data})


def held_out_rows(splits: list[Split]) -> np.ndarray:
    """The rows that have out-of-fold scores, in order: all of them with folds, the val rows
    with a fixed validation split."""
    return np.sort(np.concatenate([val for _, val in splits]))
