"""Benchmark on real photos: the original recipe against ours on lensor-coco, side by side.

Imports ../shared/data/lensor-coco (COCO boxes -> image-level severity and damage type, grouped
by source photo so Roboflow's augmented copies never straddle a split), then runs (a) the
original recipe (bench.original_recipe, 160 px) and (b) ours (configs/real-photos.json:
480 px seen at two scales, standardised linear heads, tuned thresholds) on the same grouped
folds with the same offline MobileNetV2 weights, and prints out-of-fold severity macro-F1 and
damage-type mAP for both. Skips when ../shared is absent. Flags marked "ours" try variants,
e.g. ``--size 160 --scales 1 --tune-top`` for the previous recipe.

(a) trains on its frozen backbone's features computed once per fold (``recompute=False``):
the same training and numbers as recomputing them every epoch, in minutes instead of hours.
``python -m bench.train`` times the original as it ran.

``--held-out`` scores prediction-time ensembles on photos no model saw instead: ours trains on
lensor-coco's train split alone (grouped folds inside it), then scores its val and test splits
(photos whose group also has a train photo left out) with the shipped single model, with flip
test-time augmentation, with the fold ensemble and with both, side by side, for each seed of
``--seeds`` (their spread is the seed noise).

    python -m bench.real_data
    python -m bench.real_data --held-out --seeds 42 7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import (
    LENSOR,
    ROOT,
    WEIGHTS,
    add_seed,
    add_work,
    lensor_present,
    lensor_work,
    parser,
    timed,
    versus,
)
from bench.original_recipe import original_oof
from cardamage.config import load_train_config
from cardamage.data.folds import make_folds
from cardamage.data.manifest import Manifest, load_manifest, write_manifest
from cardamage.metrics.classification import task_metrics, tune_thresholds
from cardamage.model.multitask import ModelBundle, MultiTaskClassifier, fold_ensemble, with_flip_tta
from cardamage.runs.rundir import RunDir
from cardamage.train.crossval import cross_validate
from cardamage.train.folds import predict_images

#: Our recipe: the preset README recommends for real photos
RECIPE = ROOT / "configs" / "real-photos.json"


def parse_args() -> argparse.Namespace:
    """Flags marked "ours" override the recipe file; left unset, the recipe decides."""
    p = parser(__doc__)
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
    add_seed(p, 42, "folds and both recipes' initial weights")
    p.add_argument(
        "--held-out",
        action="store_true",
        help="ours only: train on the train split, score val and test: single vs ensembles",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 7], help="--held-out's seeds")
    add_work(p, "keep the import, caches and runs here (default: a temp dir)")
    return p.parse_args()


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


#: What --held-out compares: the shipped single model and the prediction-time ensembles
VARIANTS = ("single", "single+flip", "folds", "folds+flip")


def split_by_source(manifest: Manifest) -> tuple[Manifest, dict[str, Manifest]]:
    """The train split, and the val and test photos of groups that have no train photo."""
    split = [Path(image).parts[0] for image in manifest.images]
    train = [i for i, name in enumerate(split) if name == "train"]
    seen = {manifest.groups[i] for i in train}
    held = {
        name: manifest.subset(
            i for i, s in enumerate(split) if s == name and manifest.groups[i] not in seen
        )
        for name in ("val", "test")
    }
    return manifest.subset(train), held


def variant_models(run: RunDir, folds: int, own_backbones: bool) -> dict[str, MultiTaskClassifier]:
    """Per variant, the model scored: the run's shipped model (refit), the ensemble of every
    fold's model (as `final_model: fold_ensemble` builds it: frozen folds' heads on one backbone
    pass, folds that tuned their backbone each on their own), each with and without flip
    test-time augmentation."""
    single = ModelBundle.load(run.model_dir).model
    members = [ModelBundle.load(run.fold_model_dir(i)).model for i in range(1, folds + 1)]
    ensemble = fold_ensemble(members, own_backbones=own_backbones)
    return {
        "single": single,
        "folds": ensemble,
        "single+flip": with_flip_tta(single, True),
        "folds+flip": with_flip_tta(ensemble, True),
    }


def held_out(args: argparse.Namespace, work: Path, manifest_csv: Path, config: Path) -> None:
    """Train ours on the train split per seed, score val and test with every variant."""
    tasks = our_config(args, config, manifest_csv, work / "unused", args.seeds[0]).build_tasks()
    manifest, _ = load_manifest(manifest_csv, LENSOR / "images", tasks)
    train, held = split_by_source(manifest)
    train_csv = work / "lensor_train.csv"
    write_manifest(train, train_csv, tasks)
    left_out = len(manifest) - len(train) - sum(map(len, held.values()))
    print(
        f"train split {len(train)} photos; held out: "
        + ", ".join(f"{name} {len(m)}" for name, m in held.items())
        + f" ({left_out} left out: their group has a train photo)"
    )
    photos = [p for m in held.values() for p in m.paths()]
    n_val = len(held["val"])
    rows = {"val": np.arange(n_val), "test": np.arange(n_val, len(photos))}
    rows["val+test"] = np.arange(len(photos))
    targets = {t.name: np.concatenate([m.targets(t) for m in held.values()]) for t in tasks}
    table: dict[tuple[int, str], dict[str, dict[str, float]]] = {}
    for seed in args.seeds:
        cfg = our_config(args, config, train_csv, work / f"held_out_{seed}", seed)
        _, trained_s = timed(lambda cfg=cfg: cross_validate(cfg))
        run = RunDir(cfg.run.out)
        shipped = ModelBundle.load(run.model_dir).tasks  # thresholds tuned out of fold
        models = variant_models(run, cfg.data.folds, cfg.tunes_backbone)
        for variant, model in models.items():
            scores, seconds = timed(lambda model=model: predict_images(model, photos, 16))
            print(f"seed {seed} {variant}: {seconds:.0f} s to score")
            for split, index in rows.items():
                table.setdefault((seed, split), {})[variant] = oof_scores(
                    shipped,
                    {n: y[index] for n, y in targets.items()},
                    {n: v[index] for n, v in scores.items()},
                    tuned=False,
                )
        print(f"seed {seed}: trained in {trained_s:.0f} s")
    print_held_out(table, args.seeds)


def print_held_out(table: dict, seeds: list[int]) -> None:
    """Per seed all metrics on val+test; then the headline per split and seed."""
    header = "".join(f"{v:>12}" for v in VARIANTS)
    width = 34
    for seed in seeds:
        print(f"\n{f'held out, val+test, seed {seed}':<{width}}{header}")
        by_variant = table[(seed, "val+test")]
        for key in by_variant["single"]:
            print(f"{key:<{width}}" + "".join(f"{by_variant[v][key]:>12.3f}" for v in VARIANTS))
    for key in ("severity macro-F1", "damage-type mAP", "damage-type macro-F1"):
        print(f"\n{key + ', seed / split':<{width}}{header}")
        for (seed, split), by_variant in table.items():
            print(
                f"{f'{seed} {split}':<{width}}"
                + "".join(f"{by_variant[v][key]:>12.3f}" for v in VARIANTS)
            )


def our_config(args: argparse.Namespace, config: Path, manifest_csv: Path, out: Path, seed: int):
    """Our recipe's train config (the recipe file, then the flags marked "ours")."""
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
    return load_train_config(
        [config, args.recipe],
        {
            **{key: value for key, value in ours.items() if value is not None},
            "data": manifest_csv,
            "images": LENSOR / "images",
            "out": out,
            "backbone": "mobilenetv2",
            "alpha": args.alpha,
            "weights": str(args.weights),
            "folds": args.folds,
            "seed": seed,
            "cache_dir": out.parent / "cache",
            "overwrite": True,
        },
    )


def main() -> None:
    if not lensor_present():
        return
    args = parse_args()
    work, manifest_csv, config = lensor_work(args.work, "bench-real-")
    if args.held_out:
        held_out(args, work, manifest_csv, config)
        return
    cfg = our_config(args, config, manifest_csv, work / "ours", args.seed)
    tasks = cfg.build_tasks()
    manifest, _ = load_manifest(cfg.data.data, cfg.image_root, tasks)
    splits = make_folds(manifest, tasks, cfg.data.folds, cfg.run.seed)
    targets = {t.name: manifest.targets(t) for t in tasks}
    print(
        f"{len(manifest)} photos in {len(set(manifest.groups))} groups, {cfg.data.folds} grouped "
        f"folds, MobileNetV2 {args.alpha} ({args.weights.name}); ours {cfg.model.image_size} px, "
        f"scales {cfg.model.scales} ({args.recipe.name}); the original {args.original_size} px"
    )

    _, ours_s = timed(lambda: cross_validate(cfg))
    ours_oof = np.loadtxt(
        work / "ours" / "oof_predictions.csv", delimiter=",", skiprows=1, usecols=range(1, 8)
    )
    ours = {"severity": ours_oof[:, :4], "damage_type": ours_oof[:, 4:]}

    def original() -> dict[str, np.ndarray]:
        return original_oof(
            tasks, manifest, splits, args.original_size,
            backbone="mobilenetv2", weights=str(args.weights), alpha=args.alpha,
            epochs=cfg.heads.epochs, recompute=False, seed=args.seed,
        )  # fmt: skip

    base, base_s = timed(original)
    np.savez(work / "original_oof.npz", **base)  # beside ours/oof_predictions.csv

    a, b = oof_scores(tasks, targets, base, tuned=False), oof_scores(tasks, targets, ours, True)
    versus("out of fold", ((key, a[key], b[key]) for key in a), 24, gain=True)
    print(f"{'wall time (s)':<24}{base_s:>14.0f}{ours_s:>10.0f}  ((a) features once per fold)")


if __name__ == "__main__":
    main()
