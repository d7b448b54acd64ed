"""A backbone with one head per task, and the Keras model bundle that inference loads.

The frozen phase trains only the heads on cached backbone features; because the heads are a
model of their own, the same weights then sit on top of the backbone unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras

from cardamage.errors import CardamageError
from cardamage.io import atomic_path
from cardamage.model.backbones import build_backbone
from cardamage.model.metadata import MODEL_FILE, ModelMeta, ModelSpec
from cardamage.tasks import Task

#: The heads' feature standardisation layer, adapted to each fold's training features.
STANDARDIZE = "standardize"


def build_heads(
    feature_dim: int,
    tasks: Sequence[Task],
    head_units: int,
    dropout: float,
    name: str = "heads",
    standardize: bool = False,
    l2: float = 0.0,
) -> keras.Model:
    """Features -> {task name: probabilities}: softmax for multiclass, sigmoid for multilabel.
    ``standardize`` scales every feature to zero mean and unit variance first, so that one L2
    penalty (``l2``, per weight) weighs every feature alike whatever its scale."""
    features = keras.Input((feature_dim,), name="features")
    inputs = keras.layers.Normalization(name=STANDARDIZE)(features) if standardize else features
    penalty = keras.regularizers.L2(l2) if l2 else None
    outputs = {}
    for task in tasks:
        x = keras.layers.Dropout(dropout, name=f"{task.name}_dropout")(inputs)
        if head_units:
            x = keras.layers.Dense(
                head_units,
                activation="relu",
                kernel_regularizer=penalty,
                name=f"{task.name}_hidden",
            )(x)
            x = keras.layers.Dropout(dropout, name=f"{task.name}_hidden_dropout")(x)
        activation = "softmax" if task.multiclass else "sigmoid"
        # float32 outputs keep losses stable under mixed precision
        outputs[task.name] = keras.layers.Dense(
            len(task.labels),
            activation=activation,
            kernel_regularizer=penalty,
            dtype="float32",
            name=task.name,
        )(x)
    return keras.Model(features, outputs, name=name)


def build_model(
    spec: ModelSpec, tasks: Sequence[Task]
) -> tuple[keras.Model, list[keras.Model], list[keras.Model]]:
    """Return (full model, backbones, heads). Shared layout: one backbone, one heads model."""
    pixels = keras.Input((spec.image_size, spec.image_size, 3), name="image")
    if spec.layout == "shared":
        groups = [list(tasks)]
    elif spec.layout == "per_task":
        groups = [[t] for t in tasks]
    else:
        raise CardamageError(f"unknown model layout '{spec.layout}' (use 'shared' or 'per_task')")
    backbones, heads, outputs = [], [], {}
    for i, group in enumerate(groups):
        backbone = build_backbone(
            spec.backbone, spec.weights, spec.image_size, spec.alpha, spec.mid_level, spec.scales
        )
        backbone.name = "backbone" if len(groups) == 1 else f"backbone_{group[0].name}"
        head = build_heads(
            backbone.output_shape[-1],
            group,
            spec.head_units,
            spec.dropout,
            name="heads" if len(groups) == 1 else f"heads_{i}",
            standardize=spec.standardize,
            l2=spec.head_l2,
        )
        outputs.update(head(backbone(pixels)))
        backbones.append(backbone)
        heads.append(head)
    return keras.Model(pixels, outputs, name="cardamage"), backbones, heads


@dataclass
class ModelBundle:
    """A trained Keras model with its tasks, thresholds and provenance: all inference needs."""

    model: keras.Model
    spec: ModelSpec
    tasks: list[Task]
    info: dict = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / MODEL_FILE) as tmp:
            self.model.save(tmp)
        ModelMeta(self.spec, self.tasks, self.info).write(directory)

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        meta = ModelMeta.read(directory)
        try:
            model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        except Exception as e:
            raise CardamageError(f"cannot load model {directory / MODEL_FILE}: {e}") from None
        return cls(model, meta.spec, meta.tasks, meta.info)
