"""Fine-tuning the top layers on cached activations: the frozen layers below run once.

With ``fine_tune.layers`` n the layers below the top n keep their weights, so what they make of
a photo is the same in every epoch, every fold and the refit. ``fine_tune.cached_views`` k
computes it once, for k + 1 views of each photo, into a memory-mapped cache keyed like the
feature cache: view 0 is the photo as the model sees it (decoded at the input size, as for a
prediction; validation scores come from it), views 1..k random crops, flips, brightness and
contrast of the cached pixels (``PixelAugment``), seeded by view and photo. Each epoch trains on
each photo's next view, starting at a random one, so k epochs show every view once. An epoch
then costs the top layers alone: MobileNetV2 tuned from block 6 at 224 px trains twice as fast
and validates four times as fast as from pixels (docs/benchmarks/fine-tuning.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from cardamage.data.pipeline import iter_image_batches
from cardamage.train import interrupt
from cardamage.train.features import FEATURES_FILE, FeatureRequest, cached_array
from cardamage.train.pixels import PixelAugment, augmented_photo, fetch_photo


@dataclass(frozen=True)
class Activations:
    """What enters layer ``cut`` for every view and photo, (1 + views, n, *shape)."""

    values: np.ndarray
    cut: str


def cached_activations(
    bottom: keras.Model,
    request: FeatureRequest,
    pixels: np.ndarray,
    augment: PixelAugment,
    cache_dir: Path,
    batch_size: int = 64,
) -> Activations:
    """``bottom``'s outputs for ``request.views`` views of every photo (view 0 as it is), from
    the cache or computed once; ``pixels``: the photos cached at ``request.crop``'s size."""

    def fill(out: np.ndarray, bar: tqdm) -> None:
        for view in range(request.views):
            start = 0
            for batch in _view_batches(request, view, pixels, augment, batch_size):
                interrupt.check()
                out[view, start : start + len(batch)] = bottom.predict_on_batch(batch)
                start += len(batch)
                bar.update(len(batch))

    n = len(request.paths)
    values = cached_array(
        cache_dir / request.key() / FEATURES_FILE,
        np.float32,
        (request.views, n, *bottom.output_shape[1:]),
        request.views * n,
        "activations below the tuned layers",
        fill,
    )
    return Activations(values, request.layer)


def fill_from_activations(
    top: keras.Model,
    values: np.ndarray,
    request: FeatureRequest,
    out: np.ndarray,
    batch_size: int,
    bar: tqdm,
) -> None:
    """A feature cache ``Fill``: the pooled features of the first ``request.views`` views made
    by ``top``, the layers above the cut, from their cached activations ``values``."""
    for view in range(request.views):
        for start in range(0, values.shape[1], batch_size):
            interrupt.check()
            batch = np.asarray(values[view, start : start + batch_size])
            out[view, start : start + len(batch)] = top.predict_on_batch(batch)
            bar.update(len(batch))


def _view_batches(
    request: FeatureRequest, view: int, pixels: np.ndarray, augment: PixelAugment, batch: int
) -> Iterator[np.ndarray]:
    """One view of every photo in order: view 0 decoded as for a prediction, the others
    augmented from the pixel cache with a seed of their own per view and photo."""
    if view == 0:
        yield from iter_image_batches(request.paths, request.spec.image_size, batch)
        return
    import tensorflow as tf

    seed = tf.constant(request.seed + 1000 * view, tf.int64)

    def augmented(row):
        return augmented_photo(fetch_photo(pixels, row), tf.stack([seed, row]), augment)

    photos = tf.data.Dataset.range(len(pixels)).map(
        augmented, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    for photos_batch in photos.batch(batch).prefetch(tf.data.AUTOTUNE):
        yield photos_batch.numpy()


def view_batches(
    activations: np.ndarray,
    rows: np.ndarray,
    columns: tuple[dict[str, np.ndarray], ...],
    batch_size: int,
    seed: int,
    epochs: int,
):
    """``epochs`` epochs of training batches of (activations, *columns) for ``rows``, for
    ``fit(steps_per_epoch=...)``: a new order every epoch, each photo's next augmented view
    (1..k) every epoch, from a random first one. ``columns``: per-task arrays aligned with
    ``rows`` (targets, sample weights). Planned in advance and gathered in tf.data, so the
    iterator ends with the training: a Python generator's, left running, stalled the end of
    ``fit`` for up to a minute."""
    import tensorflow as tf

    views = len(activations) - 1
    if views < 1:
        raise ValueError("training on cached activations needs at least one augmented view")
    rng = np.random.default_rng(seed)
    first = rng.integers(views, size=len(rows))
    orders = [rng.permutation(len(rows)) for _ in range(epochs)]
    plan = [(order, 1 + (first[order] + epoch) % views) for epoch, order in enumerate(orders)]

    def gather(index, view):
        x = tf.numpy_function(
            lambda i, v: np.asarray(activations[v, rows[i]], np.float32), [index, view], tf.float32
        )
        x.set_shape((None, *activations.shape[2:]))
        return (x, *({k: tf.gather(v, index) for k, v in column.items()} for column in columns))

    epoch_batches = [tf.data.Dataset.from_tensor_slices(p).batch(batch_size) for p in plan]
    ds = epoch_batches[0]
    for more in epoch_batches[1:]:  # batches never straddle two epochs
        ds = ds.concatenate(more)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
