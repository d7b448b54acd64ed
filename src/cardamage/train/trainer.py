"""One fold: the head phase on cached features, then optional fine-tuning on cached pixels."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from sklearn.utils.class_weight import compute_sample_weight
from tqdm import tqdm

from cardamage.config import FineTuneConfig, TrainConfig
from cardamage.data.pipeline import feature_batches
from cardamage.model.backbones import Backbone, nested_layers
from cardamage.model.multitask import HeadStack, MultiTaskClassifier
from cardamage.tasks import Task
from cardamage.train.activations import Activations, view_batches
from cardamage.train.interrupt import CheckInterrupt
from cardamage.train.pixels import PixelAugment, pixel_dataset

Targets = dict[str, np.ndarray]


@dataclass
class FoldData:
    """A fold's inputs: cached features (views, n, dim), per-task targets, image paths, and
    for fine-tuning the cached pixels (n, side, side, 3) or the activations below the tuned
    layers (``fine_tune.cached_views``)."""

    features: np.ndarray
    targets: Targets
    paths: Sequence[Path]
    train: np.ndarray
    val: np.ndarray
    pixels: np.ndarray | None = None
    activations: Activations | None = None


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar with rate and ETA: over epochs where they take a second (the heads), over
    batches where they take minutes (fine-tuning); shows loss and val_loss as they come."""

    def __init__(self, epochs: int, desc: str, steps_per_epoch: int | None = None) -> None:
        super().__init__()
        self.per_batch = steps_per_epoch is not None
        total, unit = (epochs * steps_per_epoch, "batch") if self.per_batch else (epochs, "epoch")
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.per_batch:
            self.bar.update()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        shown = {k: f"{v:.3f}" for k, v in (logs or {}).items() if k in ("loss", "val_loss")}
        self.bar.set_postfix(shown)
        if not self.per_batch:
            self.bar.update()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.bar.close()


#: Head-phase batches run this many to one graph call: the same updates, a fraction of the
#: Python overhead, which dominates when a step is a few small matrix products on features.
HEAD_STEPS_PER_CALL = 32
#: Rows of cached features scored per call: memory stays bounded on large data sets.
PREDICT_ROWS = 4096
#: Weight averaging when the backbone's top trains: ~100 steps, half an epoch on 1,500 photos.
#: Without it, out-of-fold scores on real photos swung by 3 points from one epoch to the next.
EMA_MOMENTUM = 0.99


def compile_model(
    model: keras.Model,
    tasks: Sequence[Task],
    optimizer: keras.optimizers.Optimizer,
    loss_weights: dict[str, float],
    steps_per_execution: int = 1,
    label_smoothing: float = 0.0,
) -> None:
    """One loss per task the model outputs; ``label_smoothing`` for multiclass tasks only (a
    multi-label target of 0.05 would say "a little damaged")."""
    names = set(model.output.keys()) if isinstance(model.output, dict) else set()
    tasks = [t for t in tasks if t.name in names]
    model.compile(
        optimizer=optimizer,
        loss={
            t.name: keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
            if t.multiclass
            else keras.losses.BinaryCrossentropy()
            for t in tasks
        },
        loss_weights={t.name: loss_weights.get(t.name, 1.0) for t in tasks},
        metrics={t.name: ["accuracy" if t.multiclass else "binary_accuracy"] for t in tasks},
        steps_per_execution=steps_per_execution,
    )


def head_optimizer(learning_rate: float, average_weights: bool) -> keras.optimizers.Optimizer:
    """Adam; ``average_weights``: it keeps an exponential moving average of the weights, which
    validation and the trained model use (see SwapEMAWeights)."""
    return keras.optimizers.Adam(learning_rate, use_ema=average_weights, ema_momentum=EMA_MOMENTUM)


def decay_schedule(cfg: TrainConfig, learning_rate: float) -> Callable[[int, float], float]:
    """The original's schedule, per epoch: constant, then lr * exp(-decay) an epoch."""

    def schedule(epoch: int, lr: float) -> float:
        return learning_rate * math.exp(
            -cfg.heads.lr_decay * max(0, epoch - cfg.heads.lr_decay_start)
        )

    return schedule


class LogLearningRate(keras.callbacks.Callback):
    """The rate each epoch ended at in the logs (a schedule inside the optimizer logs none)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            rate = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


def _callbacks(
    cfg: TrainConfig,
    log_dir: Path,
    validate: bool,
    bar: ProgressBar,
    schedule: Callable[[int, float], float] | None = None,
    average_weights: bool = False,
    log_name: str = "history.csv",
) -> list[keras.callbacks.Callback]:
    """``schedule``: a learning rate per epoch (None: the optimizer's own); ``log_name``: the
    phase's CSV log (one file a phase: the phases log different columns)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stopping = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.heads.patience, restore_best_weights=True
        )
    ]
    # first, so that early stopping sees, keeps and restores the averaged weights
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if average_weights else []
    scheduler = [keras.callbacks.LearningRateScheduler(schedule)] if schedule else []
    return [
        *swap,
        CheckInterrupt(),
        *(stopping if validate else []),
        *(scheduler or [LogLearningRate()]),
        keras.callbacks.CSVLogger(str(log_dir / log_name), append=True),
        keras.callbacks.TensorBoard(log_dir=str(log_dir / "tensorboard"), write_graph=False),
        bar,
    ]


def sample_weights(tasks: Sequence[Task], targets: Targets, enabled: bool) -> Targets:
    """Balanced class weights for multiclass tasks, as per-sample weights (Keras has no
    per-output class_weight); multilabel imbalance is handled by tuned thresholds."""
    weights = {}
    for task in tasks:
        y = targets[task.name]
        n = len(y)
        if enabled and task.multiclass:
            weights[task.name] = compute_sample_weight("balanced", y.argmax(axis=1)).astype(
                np.float32
            )
        else:
            weights[task.name] = np.ones(n, dtype=np.float32)
    return weights


def _select(targets: Targets, index: np.ndarray, names: Sequence[str], repeat: int = 1) -> Targets:
    return {name: np.tile(targets[name][index], (repeat, 1)) for name in names}


def best_epoch(history: dict[str, list[float]]) -> int:
    """The epoch early stopping restored (all epochs when there was no validation)."""
    if "val_loss" in history:
        return int(np.argmin(history["val_loss"])) + 1
    return len(history["loss"])


class HeadTrainer:
    """Trains heads models on cached features, compiling and tracing each one once per run.

    Tracing a heads model's train, test and predict functions takes longer on a CPU than
    training it on cached features, and a fresh model traces anew in every fold and the final
    refit. So the first heads models trained are compiled and kept: later ones, built afresh as
    before (the same seed gives the same initial weights and dropout seeds), lend their state to
    the kept model, which trains from a fresh optimizer state and hands the trained state back.
    The same updates, traced once. The kept models are the first fold's own heads.

    With ``tune_top`` a "heads model" is the backbone's top stage with the heads on it, fed
    the cached activations below the top: it trains at ``tune_top_learning_rate`` with its
    weights averaged.
    """

    def __init__(self, tasks: Sequence[Task], cfg: TrainConfig) -> None:
        self.tasks, self.cfg = tasks, cfg
        self.learning_rate = (
            cfg.tune_top.learning_rate if cfg.tune_top.enabled else cfg.heads.learning_rate
        )
        self._kept: list[keras.Model] = []

    def fit(
        self,
        heads: Sequence[keras.Model],
        data: FoldData,
        log_dir: Path,
        epochs: Sequence[int] | None = None,
    ) -> tuple[dict[str, list[float]], list[int]]:
        """Train each heads model: all views of the training images, the clean view of the
        validation images. Without validation images (the final refit on all data), each
        heads model trains for its given number of epochs. Returns (history, best epochs)."""
        cfg = self.cfg
        views, _, *shape = data.features.shape
        x_train = np.asarray(data.features[:, data.train]).reshape(-1, *shape)
        validate = len(data.val) > 0
        x_val = np.asarray(data.features[0, data.val])
        history: dict[str, list[float]] = {}
        best: list[int] = []
        for i, head in enumerate(heads):
            names = list(head.output.keys())
            y_train = _select(data.targets, data.train, names, views)
            y_val = _select(data.targets, data.val, names)
            n_epochs = epochs[i] if epochs is not None else cfg.heads.epochs
            if isinstance(head, HeadStack) and head.standardizer is not None:
                head.standardizer.adapt(x_train)
            model = self._take(i, head)
            weights = sample_weights(
                [t for t in self.tasks if t.name in names], y_train, cfg.heads.class_weights
            )
            result = model.fit(
                feature_batches(x_train, y_train, weights, cfg.heads.batch_size, cfg.run.seed),
                validation_data=(x_val, y_val) if validate else None,
                epochs=n_epochs,
                steps_per_epoch=math.ceil(len(x_train) / cfg.heads.batch_size),
                shuffle=False,  # the batches come shuffled
                verbose=0,
                callbacks=_callbacks(
                    cfg,
                    log_dir,
                    validate,
                    ProgressBar(n_epochs, "heads"),
                    decay_schedule(cfg, self.learning_rate),
                    cfg.tune_top.enabled,
                ),
            )
            copy_state(model, head)
            best.append(best_epoch(result.history))
            # with one heads model per task, the totals ('loss') would mix several models
            skip = {"loss", "val_loss", "learning_rate"} if len(heads) > 1 else set()
            _merge(history, {k: v for k, v in result.history.items() if k not in skip})
        return history, best

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every task's scores from the heads models trained last. A direct call in large
        chunks: ``predict`` would build a tf.data pipeline and trace a function per fold for a
        few small matrix products. Same scores (to the bit on a CPU)."""
        parts: dict[str, list[np.ndarray]] = {}
        for model in self._kept:
            for start in range(0, len(x), PREDICT_ROWS):
                outputs = model(x[start : start + PREDICT_ROWS], training=False)
                for name, value in outputs.items():
                    parts.setdefault(name, []).append(np.asarray(value))
        return {name: np.concatenate(values) for name, values in parts.items()}

    def _take(self, index: int, head: keras.Model) -> keras.Model:
        """The compiled model that trains ``head``, holding ``head``'s state."""
        if index == len(self._kept):
            compile_model(
                head,
                self.tasks,
                head_optimizer(self.learning_rate, self.cfg.tune_top.enabled),
                self.cfg.heads.loss_weights,
                HEAD_STEPS_PER_CALL,
            )
            self._kept.append(head)
        kept = self._kept[index]
        copy_state(head, kept)
        reset_optimizer(kept.optimizer, self.learning_rate)
        return kept


def copy_state(source: keras.Model, target: keras.Model) -> None:
    """Weights and dropout seed states of one model into another of the same architecture."""
    if source is target:
        return
    for from_, to in zip(source.variables, target.variables, strict=True):
        to.assign(from_)


def reset_optimizer(optimizer: keras.optimizers.Optimizer, learning_rate: float) -> None:
    """Back to the state a new optimizer starts in: no steps taken, no moments, the initial
    learning rate (variables assigned in place, so the traced train function stays valid)."""
    for variable in optimizer.variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    optimizer.learning_rate = learning_rate


def unfreeze_top(backbone: Backbone, n_layers: int, freeze_batchnorm: bool) -> None:
    """Make the top ``n_layers`` of the backbone trainable (-1: all). BatchNorm layers stay in
    inference mode when ``freeze_batchnorm``: small fine-tuning batches would wreck a pretrained
    backbone's ImageNet statistics, while one trained from scratch needs its BatchNorm to learn."""
    layers = backbone.tunable_layers
    backbone.trainable = True
    _unfreeze(layers if n_layers == -1 else layers[-n_layers:], layers, freeze_batchnorm)


def _unfreeze(
    chosen: Sequence[keras.layers.Layer],
    layers: Sequence[keras.layers.Layer],
    freeze_batchnorm: bool,
) -> None:
    ids = {id(layer) for layer in chosen}
    for layer in layers:
        frozen_bn = freeze_batchnorm and isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = id(layer) in ids and not frozen_bn


def tuned_top(backbone: Backbone, heads: keras.Model, freeze_batchnorm: bool) -> keras.Model:
    """The backbone's top stage with the heads on it, fed the activations below the top: made of
    the very layers of ``backbone`` and ``heads``, so training it trains them."""
    _, top = backbone.split()
    top.trainable = True
    layers = nested_layers(top)
    _unfreeze(layers, layers, freeze_batchnorm)
    activations = keras.Input(top.input_shape[1:], name="activations")
    return keras.Model(activations, heads(top(activations)), name=f"tuned_{heads.name}")


def freezes_batchnorm(cfg: TrainConfig) -> bool:
    """Whether tuned BatchNorm layers keep their statistics (``fine_tune.batchnorm``)."""
    if cfg.fine_tune.batchnorm == "auto":
        return cfg.model.weights != "none"
    return cfg.fine_tune.batchnorm == "frozen"


def fine_tune_optimizer(recipe: FineTuneConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """AdamW, its rate decaying to 0 over ``total_steps`` with the cosine schedule."""
    learning_rate = recipe.learning_rate
    if recipe.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate, decay_steps=max(1, total_steps), alpha=0.0
        )
    return keras.optimizers.AdamW(learning_rate, weight_decay=recipe.weight_decay)


def fine_tune(
    model: MultiTaskClassifier,
    backbones: Sequence[Backbone],
    tasks: Sequence[Task],
    data: FoldData,
    cfg: TrainConfig,
    log_dir: Path,
    seed: int,
    epochs: int | None = None,
) -> tuple[dict[str, list[float]], int]:
    """End to end from the warmed-up heads, on ``data.activations`` (the layers above them) or
    else ``data.pixels``; without validation images for the given number of epochs. The rate
    follows the schedule of ``fine_tune.epochs`` even when the refit stops earlier, after the
    epochs the folds chose: the path the folds validated. Returns (history, best epoch)."""
    recipe, batch = cfg.fine_tune, cfg.heads.batch_size
    for backbone in backbones:
        unfreeze_top(backbone, recipe.layers, freezes_batchnorm(cfg))
    n_epochs = epochs or recipe.epochs
    steps = math.ceil(len(data.train) / batch)
    names = [t.name for t in tasks]
    trained = model.above(data.activations.cut) if data.activations else model
    compile_model(
        trained,
        tasks,
        fine_tune_optimizer(recipe, steps * recipe.epochs),
        cfg.heads.loss_weights,
        label_smoothing=recipe.label_smoothing,
    )
    y_train = _select(data.targets, data.train, names)
    columns = (y_train, sample_weights(tasks, y_train, cfg.heads.class_weights))
    y_val = _select(data.targets, data.val, names)
    if data.activations:
        values = data.activations.values
        train_ds = view_batches(values, data.train, columns, batch, seed, n_epochs)
        val_data = (np.asarray(values[0, data.val]), y_val)
    else:
        size = model.input_shape[1]
        augment = PixelAugment.from_config(size, cfg.data.augment)
        train_ds = pixel_dataset(
            data.pixels, data.train, columns, batch, size=size, augment=augment, seed=seed
        )
        val_data = pixel_dataset(
            data.pixels, data.val, (y_val,), batch, size=size, augment=None, seed=seed
        )
    validate = len(data.val) > 0
    schedule = decay_schedule(cfg, recipe.learning_rate) if recipe.schedule == "decay" else None
    result = trained.fit(
        train_ds,
        validation_data=val_data if validate else None,
        validation_batch_size=batch,
        epochs=n_epochs,
        steps_per_epoch=steps if data.activations else None,  # one plan for every epoch
        verbose=0,
        shuffle=False,  # the dataset shuffles itself
        callbacks=_callbacks(
            cfg,
            log_dir,
            validate,
            ProgressBar(n_epochs, "fine-tune", steps),
            schedule,
            log_name="fine_tune.csv",
        ),
    )
    return result.history, best_epoch(result.history)


def _merge(into: dict[str, list[float]], history: dict[str, list[float]]) -> None:
    for key, values in history.items():
        into.setdefault(key, []).extend(float(v) for v in values)
