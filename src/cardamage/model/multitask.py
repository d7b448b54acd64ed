"""The multi-task classifier: backbones, one head per task, and the Keras model bundle.

KerasHub style: ``MultiTaskClassifier`` is a functional model whose parts are attributes
(``backbones`` and ``heads`` by task name, ``stacks`` one per backbone), built from a
``ModelSpec`` and the tasks, which its config holds. The frozen phase trains a ``HeadStack``
(the heads on one backbone) alone on cached features; the same weights then sit on top of the
backbone unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import keras

from cardamage.errors import CardamageError
from cardamage.io import atomic_path
from cardamage.model.backbones import Backbone, build_backbone, nested_layers
from cardamage.model.metadata import FEATURES, MODEL_FILE, ModelMeta, ModelSpec
from cardamage.tasks import Task


def _task(task: Task | dict) -> Task:
    return task if isinstance(task, Task) else Task.from_dict(task)


@keras.saving.register_keras_serializable(package="cardamage")
class TaskHead(keras.layers.Layer):
    """Features -> one task's probabilities: softmax for multiclass, sigmoid for multilabel.
    ``scores`` is the final Dense layer (activation included); Grad-CAM applies its kernel to
    ``pre_logits`` by hand to get the logits."""

    def __init__(
        self, task: Task | dict, units: int, dropout: float, l2: float = 0.0, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.task = _task(task)
        self.units, self.rate, self.l2 = units, dropout, l2
        name = self.task.name
        penalty = keras.regularizers.L2(l2) if l2 else None
        self.dropout = keras.layers.Dropout(dropout, name=f"{name}_dropout")
        self.hidden = (
            keras.layers.Dense(units, "relu", kernel_regularizer=penalty, name=f"{name}_hidden")
            if units
            else None
        )
        self.hidden_dropout = (
            keras.layers.Dropout(dropout, name=f"{name}_hidden_dropout") if units else None
        )
        # float32 outputs keep losses stable under mixed precision
        self.scores = keras.layers.Dense(
            len(self.task.labels),
            activation="softmax" if self.task.multiclass else "sigmoid",
            kernel_regularizer=penalty,
            dtype="float32",
            name=name,
        )

    def pre_logits(self, x, training=None):
        x = self.dropout(x, training=training)
        if self.hidden is not None:
            x = self.hidden_dropout(self.hidden(x), training=training)
        return x

    def call(self, x, training=None):
        return self.scores(self.pre_logits(x, training=training))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "task": self.task.to_dict(),
            "units": self.units,
            "dropout": self.rate,
            "l2": self.l2,
        }


@keras.saving.register_keras_serializable(package="cardamage")
class HeadStack(keras.Model):
    """Features -> {task name: probabilities} for the tasks on one backbone. ``standardizer``
    (None unless ``standardize``) scales every feature to zero mean and unit variance first,
    so that one L2 penalty (``l2``, per weight) weighs every feature alike whatever its scale;
    it is adapted to each fold's training features."""

    def __init__(
        self,
        feature_dim: int,
        tasks: Sequence[Task | dict],
        head_units: int,
        dropout: float,
        standardize: bool = False,
        l2: float = 0.0,
        **kwargs,
    ) -> None:
        tasks = [_task(t) for t in tasks]
        # === Layers ===
        self.standardizer = keras.layers.Normalization(name="standardize") if standardize else None
        self.heads = {
            t.name: TaskHead(t, head_units, dropout, l2, name=f"{t.name}_head") for t in tasks
        }
        # === Functional model ===
        features = keras.Input((feature_dim,), name="features")
        x = self.standardizer(features) if standardize else features
        outputs = {name: head(x) for name, head in self.heads.items()}
        super().__init__(inputs=features, outputs=outputs, **{"name": "heads", **kwargs})
        # === Config ===
        self.feature_dim, self.tasks = feature_dim, tasks
        self.head_units, self.rate, self.standardize, self.l2 = head_units, dropout, standardize, l2

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "feature_dim": self.feature_dim,
            "tasks": [t.to_dict() for t in self.tasks],
            "head_units": self.head_units,
            "dropout": self.rate,
            "standardize": self.standardize,
            "l2": self.l2,
        }


def build_heads(
    feature_dim: int,
    tasks: Sequence[Task],
    head_units: int,
    dropout: float,
    name: str = "heads",
    standardize: bool = False,
    l2: float = 0.0,
) -> HeadStack:
    return HeadStack(feature_dim, tasks, head_units, dropout, standardize, l2, name=name)


def task_groups(layout: str, tasks: Sequence[Task]) -> list[list[Task]]:
    """The tasks on each backbone. Shared layout: one backbone for all."""
    if layout == "shared":
        return [list(tasks)]
    if layout == "per_task":
        return [[t] for t in tasks]
    raise CardamageError(f"unknown model layout '{layout}' (use 'shared' or 'per_task')")


@keras.saving.register_keras_serializable(package="cardamage")
class HorizontalFlip(keras.layers.Layer):
    """The photo mirrored left to right, always (RandomFlip flips at random, and only when
    training): the second pass of flip test-time augmentation."""

    def call(self, pixels):
        return keras.ops.flip(pixels, axis=2)


@keras.saving.register_keras_serializable(package="cardamage")
class MultiTaskClassifier(keras.Model):
    """Pixels in [0, 255] -> {task name: probabilities}. ``stacks``: one (backbone, HeadStack)
    pair per backbone (one in the shared layout, one per task in "per_task") and ensemble
    member; ``backbones``, ``heads`` and ``standardizers`` name the parts by task. Its config is
    the spec (initial weights aside: they are in the saved file) and the tasks.

    Two prediction-time ensembles live inside the graph, so every engine and export runs them:
    ``spec.ensemble`` head stacks on each backbone (a run's fold heads: the backbone runs once)
    and ``spec.flip_tta``, the backbone run again on the mirrored photo. A task's output is the
    mean of the probabilities of every head stack on every view."""

    def __init__(self, spec: ModelSpec | dict, tasks: Sequence[Task | dict], **kwargs) -> None:
        spec = spec if isinstance(spec, ModelSpec) else ModelSpec(**spec)
        tasks = [_task(t) for t in tasks]
        groups = task_groups(spec.layout, tasks)
        # === Layers ===
        copies, per_backbone = _ensemble_shape(spec)
        backbones, stacks = [], []
        for i, group in enumerate(groups):
            base = "backbone" if len(groups) == 1 else f"backbone_{group[0].name}"
            for copy in range(copies):
                backbone = build_backbone(
                    spec.backbone,
                    spec.weights,
                    spec.image_size,
                    spec.alpha,
                    spec.mid_level,
                    spec.scales,
                    name=base if copies == 1 else f"{base}_member{copy + 1}",
                )
                backbones.append(backbone)
                name = "heads" if len(groups) == 1 else f"heads_{i}"
                for stack in range(per_backbone):
                    member = copy * per_backbone + stack + 1
                    stacks.append(
                        build_heads(
                            backbone.feature_dim,
                            group,
                            spec.head_units,
                            spec.dropout,
                            name=name if spec.ensemble == 1 else f"{name}_member{member}",
                            standardize=spec.standardize,
                            l2=spec.head_l2,
                        )
                    )
        #: branch_heads holds each backbone's head stacks in turn (flat: Keras saves lists)
        self.branch_backbones, self.branch_heads = backbones, stacks
        self.mirror = HorizontalFlip(name="mirror") if spec.flip_tta else None
        # === Functional model ===
        pixels = keras.Input((spec.image_size, spec.image_size, 3), name="image")
        members = self._members(backbones, stacks, per_backbone)
        outputs, _ = _forward(pixels, members, self.mirror)
        super().__init__(inputs=pixels, outputs=outputs, **{"name": "cardamage", **kwargs})
        # === Config ===
        self.spec, self.tasks = spec, tasks

    @staticmethod
    def _members(
        backbones: Sequence[Backbone], stacks: Sequence[HeadStack], size: int
    ) -> list[tuple[Backbone, list[HeadStack]]]:
        return [(b, list(stacks[i * size : (i + 1) * size])) for i, b in enumerate(backbones)]

    @property
    def branches(self) -> list[tuple[Backbone, list[HeadStack]]]:
        """Each backbone with the ensemble members on it (one without an ensemble)."""
        per_backbone = _ensemble_shape(self.spec)[1]
        return self._members(self.branch_backbones, self.branch_heads, per_backbone)

    @property
    def stacks(self) -> list[tuple[Backbone, HeadStack]]:
        return [(backbone, stack) for backbone, members in self.branches for stack in members]

    @property
    def backbones(self) -> dict[str, Backbone]:
        return {name: b for b, s in self.stacks for name in s.heads}

    @property
    def heads(self) -> dict[str, TaskHead]:
        self._check_single("heads")
        return {name: head for s in self.branch_heads for name, head in s.heads.items()}

    @property
    def standardizers(self) -> dict[str, keras.layers.Normalization]:
        self._check_single("standardizers")
        return {n: s.standardizer for s in self.branch_heads if s.standardizer for n in s.heads}

    def _check_single(self, what: str) -> None:
        if self.spec.ensemble != 1:
            raise CardamageError(f"an ensemble has several {what} per task: use model.branches")

    @property
    def backbone(self) -> Backbone:
        """The backbone of the shared layout."""
        if len(self.branch_backbones) != 1:
            raise CardamageError(
                "this model has several backbones (one per task or ensemble member): "
                "use model.branches"
            )
        return self.branch_backbones[0]

    def with_features(self) -> keras.Model:
        """The same layers with one more output, ``features``: the first backbone's pooled
        features, from the very pass the heads see, for the distribution check of every engine
        (a training model cannot have it: Keras wants a loss for every output)."""
        if FEATURES in {t.name for t in self.tasks}:
            raise CardamageError(f"a task may not be named '{FEATURES}': that output is reserved")
        pixels = keras.Input(self.input_shape[1:], name="image")
        outputs, features = _forward(pixels, self.branches, self.mirror)
        return keras.Model(pixels, {**outputs, FEATURES: features[0]}, name="cardamage_serving")

    def above(self, cut: str, features: bool = False) -> keras.Model:
        """The same layers from the activations entering layer ``cut`` of every backbone on
        (flip TTA aside): training it trains this model. Every backbone must have the same
        weights below ``cut`` (they do when only layers above it were tuned: each starts from
        the same weights). ``features``: also the ``features`` output of ``with_features``."""
        tops = [backbone.split(cut)[1] for backbone in self.branch_backbones]
        activations = keras.Input(tops[0].input_shape[1:], name="activations")
        branches = [(top, members) for top, (_, members) in zip(tops, self.branches, strict=True)]
        outputs, pooled = _forward(activations, branches, None)
        if features:
            outputs = {**outputs, FEATURES: pooled[0]}
        return keras.Model(activations, outputs, name=f"cardamage_above_{cut}")

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "spec": asdict(replace(self.spec, weights="none")),
            "tasks": [t.to_dict() for t in self.tasks],
        }


def _ensemble_shape(spec: ModelSpec) -> tuple[int, int]:
    """Per task group: (backbones, head stacks on each)."""
    return (spec.ensemble, 1) if spec.ensemble_backbones else (1, spec.ensemble)


def _forward(
    pixels: keras.KerasTensor,
    branches: Sequence[tuple[Backbone, Sequence[HeadStack]]],
    mirror: keras.layers.Layer | None,
) -> tuple[dict[str, keras.KerasTensor], list[keras.KerasTensor]]:
    """Every task's probabilities, averaged over each backbone's ensemble members and the views
    (the photo, and mirrored with flip TTA), and each backbone's features of the photo as given
    (views[0]: what explanations and the distribution check take from)."""
    views = [pixels, mirror(pixels)] if mirror is not None else [pixels]
    scores: dict[str, list] = {}
    features = []
    for backbone, members in branches:
        for index, view in enumerate(views):
            pooled = backbone(view)
            if index == 0:
                features.append(pooled)
            for stack in members:
                for task, probabilities in stack(pooled).items():
                    scores.setdefault(task, []).append(probabilities)
    return {task: _mean(task, values) for task, values in scores.items()}, features


def _mean(task: str, probabilities: list) -> keras.KerasTensor:
    """One task's probabilities averaged over ensemble members and views (float32, as the
    heads' outputs, under mixed precision too)."""
    if len(probabilities) == 1:
        return probabilities[0]
    return keras.layers.Average(dtype="float32", name=f"{task}_mean")(probabilities)


def build_model(spec: ModelSpec, tasks: Sequence[Task]) -> MultiTaskClassifier:
    return MultiTaskClassifier(spec, tasks)


def with_flip_tta(model: MultiTaskClassifier, flip_tta: bool) -> MultiTaskClassifier:
    """The same weights in a model with flip test-time augmentation on or off (it adds none)."""
    rebuilt = build_model(replace(model.spec, weights="none", flip_tta=flip_tta), model.tasks)
    copy_weights(model, rebuilt)
    return rebuilt


def fold_ensemble(
    models: Sequence[MultiTaskClassifier], own_backbones: bool = False
) -> MultiTaskClassifier:
    """Every model's heads, probabilities averaged: on the first model's backbones (the fold
    models of a run whose backbones stayed frozen: the same weights in every fold, one pass),
    or with ``own_backbones`` each on its own (folds that tuned theirs: one pass each)."""
    first = models[0]
    if any(m.spec.ensemble != 1 or m.spec.layout != first.spec.layout for m in models):
        raise CardamageError("a fold ensemble is made of single models of one layout")
    spec = replace(
        first.spec, weights="none", ensemble=len(models), ensemble_backbones=own_backbones
    )
    ensemble = build_model(spec, first.tasks)
    # both in the ensemble's order: per branch (task group), each model in turn
    parts = [pair for branch in zip(*(m.stacks for m in models), strict=True) for pair in branch]
    copied: set[int] = set()
    for (backbone, stack), (model_backbone, model_stack) in zip(
        ensemble.stacks, parts, strict=True
    ):
        if id(backbone) not in copied:  # a shared backbone takes the first model's weights
            copy_weights(model_backbone, backbone)
            copied.add(id(backbone))
        copy_weights(model_stack, stack)
    return ensemble


def without_training_state(model: MultiTaskClassifier) -> MultiTaskClassifier:
    """The model with its weights alone. A compiled model, or one holding a compiled part
    (the heads trainer trains heads in place, fine-tuning the whole model), saves its optimizer's
    moments too (Keras' .keras format ignores ``include_optimizer``): a file 1.8 times the size
    that nothing reads. Such a model is saved as a rebuilt, uncompiled copy."""
    if all(getattr(m, "optimizer", None) is None for m in [model, *nested_layers(model)]):
        return model
    return with_flip_tta(model, model.spec.flip_tta)


def copy_weights(source: keras.Layer, target: keras.Layer) -> None:
    """Weights of one layer into another of the same architecture; a standardiser then takes
    its mean and variance from the copied statistics (as loading a saved one does)."""
    target.set_weights(source.get_weights())
    for layer in [target, *nested_layers(target)]:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()


@dataclass
class ModelBundle:
    """A trained Keras model with its tasks, thresholds and provenance: all inference needs."""

    model: MultiTaskClassifier
    spec: ModelSpec
    tasks: list[Task]
    info: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MODEL_FILE) as tmp:
            without_training_state(self.model).save(tmp)
        ModelMeta(self.spec, self.tasks, self.info, self.calibration).write(directory)

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        from cardamage.model.format_v1 import from_functional

        meta = ModelMeta.read(directory)
        try:
            model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        except Exception as e:
            raise CardamageError(f"cannot load model {directory / MODEL_FILE}: {e}") from None
        if not isinstance(model, MultiTaskClassifier):
            model = from_functional(model, meta.spec, meta.tasks)
        return cls(model, meta.spec, meta.tasks, meta.info, meta.calibration)
