"""Cached backbone features for the frozen phase: the backbone runs once per image and view.

The cache key covers everything the features depend on (backbone, weights, input size,
preprocessing, augmentation, number of views, seed, image bytes), so reruns, other folds and
other head settings reuse it and any change invalidates it. Features are written chunk by chunk
into a memory-mapped .npy, so memory stays bounded for large data sets.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from cardamage.config import AugmentConfig
from cardamage.data.pipeline import build_augmenter, iter_image_batches
from cardamage.model.backbones import get_backbone_spec, weights_id
from cardamage.model.metadata import ModelSpec

FEATURES_FILE = "features.npy"
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return (
        Path(os.environ.get("CARDAMAGE_CACHE", Path.home() / ".cache" / "cardamage")) / "features"
    )


def cache_key(
    spec: ModelSpec, augment: AugmentConfig, views: int, seed: int, paths: Sequence[Path]
) -> str:
    digest = hashlib.sha256()
    settings = {
        "version": CACHE_VERSION,
        "backbone": spec.backbone,
        "preprocessing": get_backbone_spec(spec.backbone).preprocessing,
        "weights": weights_id(spec.weights),
        "alpha": spec.alpha,
        "image_size": spec.image_size,
        "augment": augment.model_dump(),
        "views": views,
        # random augmentation, and random initial weights, depend on the seed
        "seed": seed,
        "keras": keras.__version__,
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()[:32]


def cached_features(
    backbone: keras.Model,
    spec: ModelSpec,
    paths: Sequence[Path],
    augment: AugmentConfig,
    views: int,
    seed: int,
    cache_dir: Path,
    batch_size: int = 64,
) -> np.ndarray:
    """Features of shape (views, n, dim), view 0 unaugmented; memory-mapped from the cache."""
    entry = cache_dir / cache_key(spec, augment, views, seed, paths)
    if not (entry / FEATURES_FILE).exists():
        _compute(backbone, spec, paths, augment, views, seed, entry, batch_size)
    return np.load(entry / FEATURES_FILE, mmap_mode="r")


def _compute(
    backbone: keras.Model,
    spec: ModelSpec,
    paths: Sequence[Path],
    augment: AugmentConfig,
    views: int,
    seed: int,
    entry: Path,
    batch_size: int,
) -> None:
    """Fill a temporary directory, then rename it into place: a killed run leaves no half entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        dim = backbone.output_shape[-1]
        out = np.lib.format.open_memmap(
            tmp / FEATURES_FILE, mode="w+", dtype=np.float32, shape=(views, len(paths), dim)
        )
        with tqdm(total=views * len(paths), desc="backbone features", unit="img") as bar:
            for view in range(views):
                augmenter = build_augmenter(augment, seed + 1000 * view) if view else None
                start = 0
                for batch in iter_image_batches(paths, spec.image_size, batch_size):
                    if augmenter is not None:
                        batch = augmenter(batch, training=True)
                    out[view, start : start + len(batch)] = backbone.predict_on_batch(batch)
                    start += len(batch)
                    bar.update(len(batch))
        out.flush()
        del out
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
