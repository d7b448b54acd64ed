"""Benchmark: the original training recipe against ours (cached features), side by side.

Full k-fold cross-validation of all three tasks on the generated default set: (a) the original
recipe (bench.original_recipe), (b) ours with a cold feature cache, then (b) again with the
cache warm. Same folds, same backbone weights, same epoch cap. Prints wall times, their ratio
and each task's mean fold metric for both.

    python -m bench.train                    # 1,825 photos, 160 px, MobileNet, 5 folds
    python -m bench.train --n 600 --folds 3  # a quicker look
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import SHARED, add_work, generated, parser, timed, versus, work_dir
from bench.original_recipe import original_oof
from cardamage.config import load_train_config
from cardamage.data.folds import make_folds
from cardamage.data.manifest import load_manifest
from cardamage.metrics.classification import task_metrics
from cardamage.train.crossval import cross_validate

SHARED_V1 = SHARED / "weights" / "mobilenet_v1_0.25_imagenet_no_top.h5"


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=1825)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=30, help="epoch cap for both recipes")
    p.add_argument("--backbone", default="mobilenet")
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--weights", default=str(SHARED_V1) if SHARED_V1.exists() else "none")
    add_work(p, "keep data, cache and runs here")
    return p.parse_args()


def fold_means(tasks, targets, oof, splits) -> dict[str, dict[str, float]]:
    """Mean over folds of each task's headline metric and macro-F1 (validation splits)."""
    out = {}
    for task in tasks:
        per_fold = [
            task_metrics(task, targets[task.name][val], oof[task.name][val]) for _, val in splits
        ]
        key = "accuracy" if task.multiclass else "binary_accuracy"
        out[task.name] = {
            key: float(np.mean([m[key] for m in per_fold])),
            "macro_f1": float(np.mean([m["macro_f1"] for m in per_fold])),
        }
    return out


def ours(args, data: Path, work: Path, run: str) -> tuple[float, dict]:
    cfg = load_train_config(
        None,
        {
            "data": data,
            "out": work / run,
            "backbone": args.backbone,
            "alpha": args.alpha,
            "weights": args.weights,
            "image_size": args.size,
            "folds": args.folds,
            "epochs": args.epochs,
            "cache_dir": work / "cache",
            "overwrite": True,
            "tune_thresholds": False,
        },
    )
    summary, seconds = timed(lambda: cross_validate(cfg))
    means = {}
    for name, task in summary.tasks.items():
        means[name] = {
            task.headline.metric: task.headline.mean,
            "macro_f1": float(np.mean([m["macro_f1"] for m in task.per_fold])),
        }
    return seconds, means


def original(args, data: Path) -> tuple[float, dict]:
    cfg = load_train_config(None, {"data": data, "out": Path("unused")})
    tasks = cfg.build_tasks()
    manifest, _ = load_manifest(data, data.parent, tasks)
    splits = make_folds(manifest, tasks, args.folds, cfg.run.seed)  # the same folds as ours
    targets = {t.name: manifest.targets(t) for t in tasks}

    def run() -> dict[str, np.ndarray]:
        return original_oof(
            tasks, manifest, splits, args.size,
            backbone=args.backbone, weights=args.weights, alpha=args.alpha, epochs=args.epochs,
        )  # fmt: skip

    oof, seconds = timed(run)
    return seconds, fold_means(tasks, targets, oof, splits)


def main() -> None:
    args = parse_args()
    work = work_dir(args.work, "bench-train-")
    data = generated(work / "data", args.n, args.size)
    print(
        f"{args.n} photos, {args.size} px, {args.backbone} (alpha {args.alpha}), "
        f"weights {Path(args.weights).name}, {args.folds} folds, epoch cap {args.epochs}"
    )
    cold, ours_metrics = ours(args, data, work, "run_cold")
    warm, _ = ours(args, data, work, "run_warm")
    base, base_metrics = original(args, data)
    print(f"\n{'recipe':<28}{'wall s':>9}")
    print(f"{'(a) original':<28}{base:>9.1f}")
    print(f"{'(b) ours, cache cold':<28}{cold:>9.1f}   speed-up {base / cold:.1f}x")
    print(f"{'(b) ours, cache warm':<28}{warm:>9.1f}   speed-up {base / warm:.1f}x")
    rows = (
        (f"{name:<14}{key}", base_metrics[name][key], value)
        for name, metrics in ours_metrics.items()
        for key, value in metrics.items()
    )
    versus(f"{'task':<14}metric", rows, 32)


if __name__ == "__main__":
    main()
