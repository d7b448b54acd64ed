"""Image batches for feature extraction and cached features for the heads: parallel decoding,
augmentation, tf.data."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from cardamage.config import AugmentConfig
from cardamage.data.images import load_image


def build_augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential:
    """Label-preserving photometric and geometric changes on [0, 255] pixels.

    Only horizontal flips: an upside-down car (the original also flipped vertically) is not a
    photo anyone will send, and a left-right flip keeps front, rear and side where they are.
    """
    layers: list[keras.layers.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.zoom:
        layers.append(
            keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="reflect", seed=seed + 1)
        )
    if cfg.translate:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.translate, cfg.translate, fill_mode="reflect", seed=seed + 2
            )
        )
    if cfg.brightness:
        layers.append(
            keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 3)
        )
    if cfg.contrast:
        layers.append(
            keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 4)
        )
    return keras.Sequential(layers, name="augment")


def iter_image_batches(
    paths: Sequence[Path], size: int, batch_size: int, workers: int = 4
) -> Iterator[np.ndarray]:
    """Decode in a thread pool (Pillow releases the GIL) while the caller runs the model."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            yield np.stack(list(pool.map(lambda p: load_image(p, size), chunk))).astype(np.float32)


def feature_batches(
    features: np.ndarray,
    targets: dict[str, np.ndarray],
    sample_weights: dict[str, np.ndarray],
    batch_size: int,
    seed: int,
):
    """Endless batches of cached features in a new order every epoch. Keras' own shuffle of
    numpy arrays replays one permutation in every epoch once a seed is set, so the heads would
    see the same batches again and again."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((features, targets, sample_weights))
    ds = ds.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)
