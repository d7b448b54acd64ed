"""Cached backbone features for the frozen phase: the backbone runs once per image and view.

The cache key covers everything the features depend on (backbone, weights, input size,
preprocessing, augmentation, number of views, seed, image bytes), so reruns, other folds and
other head settings reuse it and any change invalidates it. Features are written chunk by chunk
into a memory-mapped .npy, so memory stays bounded for large data sets.

An entry is filled in a hidden partial folder (``.<key>.<random>``) renamed into place when
complete. A killed run (``kill -9``, a power cut) cannot remove its own: the next run on the
same cache removes every partial folder whose writer is gone (its process no longer runs on
this host, or it started over a day ago), and never one a live writer is filling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from cardamage.config import AugmentConfig
from cardamage.data.pipeline import build_augmenter, iter_image_batches
from cardamage.model.backbones import get_backbone_spec, weights_id
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import build_model
from cardamage.tasks import Task
from cardamage.train import interrupt

FEATURES_FILE = "features.npy"
CACHE_VERSION = 1
#: In a partial entry: which process fills it ({"host", "pid"}), so others know when it died.
WRITER_FILE = "writer.json"
#: A partial entry whose writer cannot be asked (another host's, or one from before writers
#: were recorded) is abandoned after this long: no extraction runs for a day.
ABANDONED_AFTER_S = 24 * 3600


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
    #: None: views augmented at the input size (``augment``); a share: views cropped from
    #: photos cached this much larger (fine-tuning's ``cached_views``)
    crop: float | None = None

    def key(self) -> str:
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
        if self.crop is not None:
            settings["crop"] = self.crop
        return content_key(settings, self.paths)


def content_key(settings: dict, paths: Sequence[Path]) -> str:
    """A cache entry's name: the settings and the bytes of every image, so that an edited
    photo or setting is a new entry, never a stale one."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in paths:
        digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()[:32]


#: What fills a cache entry's (views, n, *feature shape) array, reporting images done on the
#: bar: here, ``fill_here``; on a Ray cluster, ``cardamage.distributed.features``.
Fill = Callable[[FeatureRequest, np.ndarray, int, tqdm], None]


@dataclass(frozen=True)
class Extractor:
    """How an actor rebuilds what computes the features: the model spec (its weights file is
    not needed: ``weights`` are the driver's), and the bottom part for tune_top."""

    spec: ModelSpec
    tasks: list[Task]
    weights: list[np.ndarray]
    bottom: bool  # tune_top: the activations entering the top stage
    precision: str  # the driver's Keras dtype policy

    def build(self) -> keras.Model:
        keras.mixed_precision.set_global_policy(self.precision)
        spec = replace(self.spec, weights="none")  # same layers; the weights come next
        backbone = build_model(spec, self.tasks).branch_backbones[0]
        backbone.set_weights(self.weights)
        return backbone.split()[0] if self.bottom else backbone


#: A ``Fill`` computing elsewhere, built from what rebuilds the extractor there: an
#: application layer's (``cardamage.distributed.features.RayFill``) given to ``cross_validate``.
RemoteFill = Callable[[Extractor], Fill]


def cached_features(
    backbone: keras.Model,
    request: FeatureRequest,
    cache_dir: Path,
    batch_size: int = 64,
    fill: Fill | None = None,
) -> np.ndarray:
    """Features of shape (views, n, *feature shape), view 0 unaugmented; memory-mapped from
    the cache. ``backbone`` is whatever computes them: the backbone, or its bottom part;
    ``fill`` computes them elsewhere (by default, with ``backbone`` in this process)."""
    fill = fill or functools.partial(fill_here, backbone)
    n, views = len(request.paths), request.views
    return cached_array(
        cache_dir / request.key() / FEATURES_FILE,
        np.float32,
        (views, n, *backbone.output_shape[1:]),
        views * n,
        "backbone features",
        lambda out, bar: fill(request, out, batch_size, bar),
    )


def cached_array(
    file: Path,
    dtype: type,
    shape: tuple[int, ...],
    total: int,
    desc: str,
    fill: Callable[[np.ndarray, tqdm], None],
) -> np.ndarray:
    """A cache entry's array, memory-mapped; on first use ``fill`` computes it (reporting its
    ``total`` images on the bar) into a temporary directory renamed into place, so a killed run
    leaves no half entry. Partial entries of killed runs are swept first."""
    sweep_partial_entries(file.parent.parent)
    if not file.exists():

        def compute(path: Path) -> None:
            out = np.lib.format.open_memmap(path, "w+", dtype, shape)
            with tqdm(total=total, desc=desc, unit="img") as bar:
                fill(out, bar)
            out.flush()

        _write_entry(file, compute)
    return np.load(file, mmap_mode="r")


def _write_entry(file: Path, compute: Callable[[Path], None]) -> None:
    """``compute`` writes the entry's file into a temporary directory marked with its writer,
    which is renamed into place once complete."""
    entry = file.parent
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    writer = {"host": socket.gethostname(), "pid": os.getpid()}
    (tmp / WRITER_FILE).write_text(json.dumps(writer), encoding="utf-8")
    try:
        compute(tmp / file.name)
        (tmp / WRITER_FILE).unlink()
        os.replace(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sweep_partial_entries(cache_dir: Path) -> None:
    """Remove the partial entries killed runs left (see the module's docstring), saying so."""
    abandoned = [d for d in cache_dir.glob(".*") if d.is_dir() and _abandoned(d)]
    if not abandoned:
        return
    size = sum(f.stat().st_size for d in abandoned for f in d.rglob("*") if f.is_file())
    for partial in abandoned:
        shutil.rmtree(partial, ignore_errors=True)
    entries = "entry" if len(abandoned) == 1 else "entries"
    print(
        f"feature cache: removed {len(abandoned)} partial {entries} left by killed runs "
        f"({size / 2**20:.1f} MB)"
    )


def _abandoned(partial: Path) -> bool:
    """Whether the process that fills ``partial`` is gone. Without a writer recorded (yet, or
    ever), or with one on another host, only the folder's age tells."""
    try:
        writer = json.loads((partial / WRITER_FILE).read_text(encoding="utf-8"))
        host, pid = writer["host"], int(writer["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        host, pid = None, 0
    if host == socket.gethostname() and pid > 0:
        return not _running(pid)
    try:
        return time.time() - partial.stat().st_mtime > ABANDONED_AFTER_S
    except FileNotFoundError:  # its writer just finished (renamed it) or removed it
        return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def fill_here(
    backbone: keras.Model, request: FeatureRequest, out: np.ndarray, batch_size: int, bar: tqdm
) -> None:
    for view in range(request.views):
        _fill_view(backbone, request, view, out[view], batch_size, bar)


def _fill_view(
    backbone: keras.Model,
    request: FeatureRequest,
    view: int,
    out: np.ndarray,
    batch_size: int,
    bar: tqdm,
) -> None:
    augmenter = view_augmenter(request, view)
    start = 0
    for batch in iter_image_batches(request.paths, request.spec.image_size, batch_size):
        interrupt.check()
        if augmenter is not None:
            batch = augmenter(batch, training=True)
        out[start : start + len(batch)] = backbone.predict_on_batch(batch)
        start += len(batch)
        bar.update(len(batch))


def view_augmenter(request: FeatureRequest, view: int) -> keras.Sequential | None:
    """View 0 is the photo as it is; every other view a seeded random augmentation of it, whose
    random streams advance batch by batch through the view's images."""
    return build_augmenter(request.augment, request.seed + 1000 * view) if view else None


def skip_batches(augmenter: keras.Sequential, batches: int, shape: tuple[int, ...]) -> None:
    """Advance the augmenter's random streams as if it had augmented ``batches`` batches of
    ``shape``: batch k of a view then gets the very augmentation ``_fill_view`` gives it,
    wherever it is computed. Each stream's step per batch is measured on one dummy batch."""
    generators = [g for layer in augmenter.layers for g in layer._seed_generators]
    before = [np.asarray(g.state.value) for g in generators]
    augmenter(np.zeros(shape, np.float32), training=True)
    for generator, start in zip(generators, before, strict=True):
        step = np.asarray(generator.state.value) - start
        generator.state.assign(start + batches * step)
