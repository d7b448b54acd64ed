"""Fine-tuning's input: photos decoded and resized once into a cache, augmented on the fly.

Decoding every photo again in every epoch of every fold and the refit would spend on the CPU
what training needs (the CPU both decodes and trains). The cache keeps
each photo resized to a little more than the model's input (``fine_tune.crop``) as uint8 in a
memory-mapped .npy keyed like the feature cache (settings and image bytes): folds, the final
refit and later runs share it, and memory stays bounded. Each epoch then draws a random crop
back to the input size, a flip, brightness and contrast from those pixels, in tf.data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardamage.config import AugmentConfig
from cardamage.data.pipeline import iter_image_batches
from cardamage.train import interrupt
from cardamage.train.features import cached_array, content_key

PIXELS_FILE = "pixels.npy"
#: bump with any change to how photos are decoded (load_image): the key holds no decoder
PIXEL_CACHE_VERSION = 1


def cached_size(image_size: int, crop: float) -> int:
    """The side photos are cached at: random crops of ``image_size`` fit inside it."""
    return round(image_size * (1 + crop))


def cached_pixels(paths: Sequence[Path], size: int, cache_dir: Path) -> np.ndarray:
    """Every photo as (n, size, size, 3) uint8, resized as the model's inputs are (the whole
    frame); memory-mapped from the cache, computed on first use."""
    settings = {"kind": "pixels", "version": PIXEL_CACHE_VERSION, "size": size}
    return cached_array(
        cache_dir / content_key(settings, paths) / PIXELS_FILE,
        np.uint8,
        (len(paths), size, size, 3),
        len(paths),
        "decoded photos",
        lambda out, bar: _decode(paths, size, out, bar),
    )


def _decode(paths: Sequence[Path], size: int, out: np.ndarray, bar) -> None:
    start = 0
    for batch in iter_image_batches(paths, size, 64):
        interrupt.check()
        out[start : start + len(batch)] = batch.astype(np.uint8)
        start += len(batch)
        bar.update(len(batch))


@dataclass(frozen=True)
class PixelAugment:
    """What each training photo gets, drawn anew every epoch: a random ``size`` crop of the
    cached photo, a horizontal flip, brightness (± this share of the range) and contrast
    (a factor within 1 ± contrast)."""

    size: int
    flip: bool
    brightness: float
    contrast: float

    @classmethod
    def from_config(cls, size: int, augment: AugmentConfig) -> PixelAugment:
        return cls(size, augment.flip, augment.brightness, augment.contrast)


def pixel_dataset(
    pixels: np.ndarray,
    rows: np.ndarray,
    columns: tuple,
    batch_size: int,
    *,
    size: int,
    augment: PixelAugment | None,
    seed: int,
):
    """Batches of (photo, *columns) for ``rows`` of the cache: shuffled and augmented anew
    every epoch with ``augment``, else in order with each photo resized to ``size`` (the whole
    frame, as the model sees it). ``columns``: per-row arrays (targets, weights) or dicts."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((rows.astype(np.int64), *columns))
    if augment is None:
        ds = ds.map(
            lambda row, *rest: (
                tf.image.resize(fetch_photo(pixels, row), (size, size), antialias=True),
                *rest,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda item, pair: (
                augmented_photo(fetch_photo(pixels, item[0]), pair, augment),
                *item[1:],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def fetch_photo(pixels: np.ndarray, row):
    """Row ``row`` (a tensor) of the cache, as a uint8 tensor, inside tf.data."""
    import tensorflow as tf

    photo = tf.numpy_function(lambda r: np.asarray(pixels[r]), [row], tf.uint8)
    photo.set_shape(pixels.shape[1:])
    return photo


def augmented_photo(photo, seed, augment: PixelAugment):
    """One photo's random crop, flip, brightness and contrast, from stateless seeds: the same
    seed gives the same photo, whatever thread runs it."""
    import tensorflow as tf

    crop, flip, light, contrast = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    photo = tf.image.stateless_random_crop(photo, (augment.size, augment.size, 3), crop)
    if augment.flip:
        photo = tf.image.stateless_random_flip_left_right(photo, flip)
    photo = tf.cast(photo, tf.float32)
    if augment.brightness:
        photo = tf.image.stateless_random_brightness(photo, augment.brightness * 255.0, light)
    if augment.contrast:
        photo = tf.image.stateless_random_contrast(
            photo, 1 - augment.contrast, 1 + augment.contrast, contrast
        )
    return tf.clip_by_value(photo, 0.0, 255.0)
