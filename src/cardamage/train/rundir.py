"""The run directory: the unit of output. Everything a run made, with the exact config and
package versions, so any result can be traced, reproduced and resumed."""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from cardamage.config import TrainConfig, load_train_config
from cardamage.data.manifest import Manifest, write_manifest, write_problems
from cardamage.errors import CardamageError
from cardamage.io import atomic_write_json, atomic_write_text
from cardamage.tasks import Task
from cardamage.train import runtime

PACKAGES = ("cardamage", "keras", "tensorflow", "tensorflow-cpu", "numpy", "scikit-learn", "pillow")
CONFIG_FILE = "config.json"
FOLDS_FILE = "folds.json"


def prepare(out: Path, overwrite: bool) -> None:
    """Never touch an existing run unless asked: a typo must not destroy last week's results."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CardamageError(
                f"run directory {out} already exists and is not empty: "
                f"choose another --out, pass --overwrite, or --resume it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def resume_config(run: Path) -> TrainConfig:
    """The config a run started with: a resumed run must train exactly what it began."""
    if not (run / CONFIG_FILE).exists():
        raise CardamageError(f"cannot resume {run}: no {CONFIG_FILE} (was it a cardamage run?)")
    return load_train_config(run / CONFIG_FILE, {"out": run})


def versions() -> dict[str, str]:
    found = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": runtime.device_summary(),
    }
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def fold_records(manifest: Manifest, splits: list) -> list[dict]:
    return [
        {"fold": i, "validation": [manifest.images[j] for j in val]}
        for i, (_, val) in enumerate(splits, start=1)
    ]


def record_inputs(cfg: TrainConfig, manifest: Manifest, problems: list, splits: list) -> None:
    atomic_write_json(cfg.run.out / "versions.json", versions())
    write_manifest(manifest, cfg.run.out / "manifest.csv", cfg.build_tasks())
    if problems:
        write_problems(problems, cfg.run.out / "skipped.csv")
    atomic_write_json(cfg.run.out / FOLDS_FILE, fold_records(manifest, splits))
    # written last: its presence marks a run that can be resumed
    atomic_write_json(cfg.run.out / CONFIG_FILE, cfg.model_dump(mode="json"))


def sweep_temporaries(run: Path) -> None:
    """A killed process skips its cleanup: remove the temporary files its atomic writes left."""
    for leftover in run.rglob(".tmp.*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)


def check_same_folds(cfg: TrainConfig, manifest: Manifest, splits: list) -> None:
    recorded = json.loads((cfg.run.out / FOLDS_FILE).read_text(encoding="utf-8"))
    if recorded != fold_records(manifest, splits):
        raise CardamageError(
            f"cannot resume {cfg.run.out}: the data in {cfg.data.data} changed since the run "
            "started"
        )


def write_oof(
    path: Path, manifest: Manifest, tasks: list[Task], oof: dict[str, np.ndarray]
) -> None:
    """Every image's out-of-fold scores: the raw material for error analysis."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image"] + [f"{t.name}:{label}" for t in tasks for label in t.labels])
    for i, image in enumerate(manifest.images):
        scores = [f"{oof[t.name][i, j]:.4f}" for t in tasks for j in range(len(t.labels))]
        writer.writerow([image, *scores])
    atomic_write_text(path, buffer.getvalue())
