"""Benchmark on real photos: the original recipe against ours on lensor-coco, side by side.

Imports ../shared/data/lensor-coco (COCO boxes -> image-level severity and damage type, grouped
by source photo so Roboflow's augmented copies never straddle a split), then runs (a) the
original recipe (bench/original_recipe.py, 160 px) and (b) ours (configs/real-photos.json:
480 px seen at two scales, standardised linear heads, tuned thresholds) on the same grouped
folds with the same offline MobileNetV2 weights, and prints out-of-fold severity macro-F1 and
damage-type mAP for both. Skips when ../shared is absent. Flags marked "ours" try variants,
e.g. ``--size 160 --scales 1 --tune-top`` for the previous recipe.

(a) trains on its frozen backbone's features computed once per fold (``recompute=False``):
the same training and numbers as recomputing them every epoch, in minutes instead of hours.
bench/train.py times the original as it ran.

    python bench/real_data.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from original_recipe import original_oof

from cardamage.config import load_train_config
from cardamage.data.folds import make_folds
from cardamage.data.importers import import_coco
from cardamage.data.manifest import load_manifest
from cardamage.evaluate.metrics import task_metrics, tune_thresholds
from cardamage.tasks import Task, TaskKind
from cardamage.train.crossval import cross_validate

SHARED = Path(__file__).resolve().parents[2] / "shared"
LENSOR = SHARED / "data" / "lensor-coco"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_imagenet_dogs_no_top.weights.h5"
#: Our recipe: the preset README recommends for real photos
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "real-photos.json"
SEVERITIES = ("minor", "moderate", "severe")
TYPES = ("dent", "scratch", "broken")


def parse_args() -> argparse.Namespace:
    """Flags marked "ours" override the recipe file; left unset, the recipe decides."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", type=Path, default=RECIPE, help="ours: a train config's options")
    p.add_argument("--size", type=int, help="ours: input size")
    p.add_argument("--scales", type=int, nargs="+", help="ours: e.g. --size 480 --scales 1 3")
    p.add_argument("--original-size", type=int, default=160, help="the original's input size")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, help="epoch cap for both recipes (default: ours)")
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--views", type=int, help="ours")
    p.add_argument("--tune-top", action=argparse.BooleanOptionalAction, help="ours")
    p.add_argument("--head-units", type=int, help="ours: 0 for linear heads")
    p.add_argument("--dropout", type=float, help="ours")
    p.add_argument("--head-l2", type=float, help="ours: L2 penalty on the heads")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, help="ours")
    p.add_argument("--patience", type=int, help="ours: early-stopping patience")
    p.add_argument("--seed", type=int, default=42, help="folds and both recipes' initial weights")
    p.add_argument("--work", type=Path)
    return p.parse_args()


def import_lensor(work: Path) -> tuple[Path, Path]:
    """Manifest + a train config listing the two tasks lensor has (no location labels)."""
    labels = work / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "severity.txt").write_text("\n".join([*SEVERITIES, "whole"]) + "\n")
    (labels / "damage_type.txt").write_text("\n".join(TYPES) + "\n")
    mapping = work / "mapping.json"
    categories = {f"{s}-{t}": {"severity": s, "damage_type": t} for s in SEVERITIES for t in TYPES}
    mapping.write_text(
        json.dumps(
            {
                "categories": categories,
                "no_boxes": {"severity": "whole"},
                "severity_order": list(SEVERITIES),
            }
        )
    )
    tasks = [
        Task("severity", TaskKind.MULTICLASS, (*SEVERITIES, "whole")),
        Task("damage_type", TaskKind.MULTILABEL, TYPES),
    ]
    annotations = sorted((LENSOR / "annotations").glob("instances_*.json"))
    manifest = work / "lensor.csv"
    print(import_coco(annotations, LENSOR / "images", mapping, manifest, tasks).summary())
    config = work / "train.json"
    config.write_text(
        json.dumps(
            {
                "tasks": [
                    {
                        "name": "severity",
                        "kind": "multiclass",
                        "labels_file": str(labels / "severity.txt"),
                    },
                    {
                        "name": "damage_type",
                        "kind": "multilabel",
                        "labels_file": str(labels / "damage_type.txt"),
                    },
                ]
            }
        )
    )
    return manifest, config


def oof_scores(tasks, targets, oof, tuned: bool) -> dict[str, float]:
    """The headline scores, then severity F1 per class and damage-type AP per label."""
    sev, types = tasks
    if tuned:
        types = types.with_thresholds(tune_thresholds(targets[types.name], oof[types.name]))
    s = task_metrics(sev, targets[sev.name], oof[sev.name])
    t = task_metrics(types, targets[types.name], oof[types.name])
    return {
        "severity macro-F1": s["macro_f1"],
        "severity accuracy": s["accuracy"],
        "damage-type mAP": t["mAP"],
        "damage-type macro-F1": t["macro_f1"],
        **{f"  F1 {label}": v["f1"] for label, v in s["per_label"].items()},
        **{f"  AP {label}": v["average_precision"] for label, v in t["per_label"].items()},
    }


def main() -> None:
    if not LENSOR.exists() or not WEIGHTS.exists():
        print(f"skipped: {LENSOR} or {WEIGHTS} is absent")
        return
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-real-"))
    manifest_csv, config = import_lensor(work)
    ours = {
        "image_size": args.size,
        "scales": args.scales,
        "epochs": args.epochs,
        "views": args.views,
        "tune_top": args.tune_top,
        "patience": args.patience,
        "head_units": args.head_units,
        "dropout": args.dropout,
        "head_l2": args.head_l2,
        "standardize": args.standardize,
    }
    cfg = load_train_config(
        [config, args.recipe],
        {
            **{key: value for key, value in ours.items() if value is not None},
            "data": manifest_csv,
            "images": LENSOR / "images",
            "out": work / "ours",
            "backbone": "mobilenetv2",
            "alpha": args.alpha,
            "weights": str(args.weights),
            "folds": args.folds,
            "seed": args.seed,
            "cache_dir": work / "cache",
            "overwrite": True,
        },
    )
    tasks = cfg.build_tasks()
    manifest, _ = load_manifest(cfg.data.data, cfg.image_root, tasks)
    splits = make_folds(manifest, tasks, cfg.data.folds, cfg.run.seed)
    targets = {t.name: manifest.targets(t) for t in tasks}
    print(
        f"{len(manifest)} photos in {len(set(manifest.groups))} groups, {cfg.data.folds} grouped "
        f"folds, MobileNetV2 {args.alpha} ({args.weights.name}); ours {cfg.model.image_size} px, "
        f"scales {cfg.model.scales} ({args.recipe.name}); the original {args.original_size} px"
    )

    started = time.perf_counter()
    cross_validate(cfg)
    ours_s = time.perf_counter() - started
    ours_oof = np.loadtxt(
        work / "ours" / "oof_predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 8)
    )
    ours = {"severity": ours_oof[:, :4], "damage_type": ours_oof[:, 4:]}

    started = time.perf_counter()
    base = original_oof(
        tasks, manifest, splits, args.original_size,
        backbone="mobilenetv2", weights=str(args.weights), alpha=args.alpha,
        epochs=cfg.heads.epochs, recompute=False, seed=args.seed,
    )  # fmt: skip
    base_s = time.perf_counter() - started
    np.savez(work / "original_oof.npz", **base)  # beside ours/oof_predictions.csv

    a, b = oof_scores(tasks, targets, base, tuned=False), oof_scores(tasks, targets, ours, True)
    print(f"\n{'out of fold':<24}{'(a) original':>14}{'(b) ours':>10}{'gain':>8}")
    for key in a:
        print(f"{key:<24}{a[key]:>14.3f}{b[key]:>10.3f}{100 * (b[key] - a[key]):>+7.1f}p")
    print(f"{'wall time (s)':<24}{base_s:>14.0f}{ours_s:>10.0f}  ((a) features once per fold)")


if __name__ == "__main__":
    main()
