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
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from cardamage.config import AugmentConfig
from cardamage.data.pipeline import build_augmenter, iter_image_batches
from cardamage.model.backbones import get_backbone_spec, weights_id
from cardamage.model.metadata import ModelSpec
from cardamage.train import interrupt

FEATURES_FILE = "features.npy"
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return (
        Path(os.environ.get("CARDAMAGE_CACHE", Path.home() / ".cache" / "cardamage")) / "features"
    )


@dataclass(frozen=True)
class FeatureRequest:
    """Which features: everything they depend on, hence also the cache key."""

    spec: ModelSpec
    paths: Sequence[Path]
    augment: AugmentConfig
    views: int
    seed: int  # random augmentation, and random initial weights, depend on it
    #: None: the backbone's pooled features; a layer name: the activations entering it
    layer: str | None = None

    def key(self) -> str:
        digest = hashlib.sha256()
        settings = {
            "version": CACHE_VERSION,
            "backbone": self.spec.backbone,
            "preprocessing": get_backbone_spec(self.spec.backbone).preprocessing,
            "weights": weights_id(self.spec.weights),
            "alpha": self.spec.alpha,
            "mid_level": self.spec.mid_level,
            "scales": list(self.spec.scales),
            "layer": self.layer,
            "precision": keras.mixed_precision.global_policy().name,
            "image_size": self.spec.image_size,
            "augment": self.augment.model_dump(),
            "views": self.views,
            "seed": self.seed,
            "keras": keras.__version__,
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        for path in self.paths:
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        return digest.hexdigest()[:32]


def cached_features(
    backbone: keras.Model, request: FeatureRequest, cache_dir: Path, batch_size: int = 64
) -> np.ndarray:
    """Features of shape (views, n, *feature shape), view 0 unaugmented; memory-mapped from
    the cache. ``backbone`` is whatever computes them: the backbone, or its bottom part."""
    entry = cache_dir / request.key()
    if not (entry / FEATURES_FILE).exists():
        _compute(backbone, request, entry, batch_size)
    return np.load(entry / FEATURES_FILE, mmap_mode="r")


def _compute(backbone: keras.Model, request: FeatureRequest, entry: Path, batch_size: int) -> None:
    """Fill a temporary directory, then rename it into place: a killed run leaves no half entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    n, views = len(request.paths), request.views
    try:
        out = np.lib.format.open_memmap(
            tmp / FEATURES_FILE, "w+", np.float32, (views, n, *backbone.output_shape[1:])
        )
        with tqdm(total=views * n, desc="backbone features", unit="img") as bar:
            for view in range(views):
                _fill_view(backbone, request, view, out[view], batch_size, bar)
        out.flush()
        del out
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fill_view(
    backbone: keras.Model,
    request: FeatureRequest,
    view: int,
    out: np.ndarray,
    batch_size: int,
    bar: tqdm,
) -> None:
    """View 0 is the photo as it is; every other view a seeded random augmentation of it."""
    seed = request.seed + 1000 * view
    augmenter = build_augmenter(request.augment, seed) if view else None
    start = 0
    for batch in iter_image_batches(request.paths, request.spec.image_size, batch_size):
        interrupt.check()
        if augmenter is not None:
            batch = augmenter(batch, training=True)
        out[start : start + len(batch)] = backbone.predict_on_batch(batch)
        start += len(batch)
        bar.update(len(batch))
