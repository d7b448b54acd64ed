"""The original project's models: three per-task Keras models with pixels / 255 at 160 px.

Users who trained with the original keep their models; they run behind the same Predictor,
so main.py, `cardamage predict` and the web app treat them like any other model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardamage.config import AppConfig, OriginalTaskKeys
from cardamage.errors import CardamageError
from cardamage.inference.predictor import Predictor
from cardamage.model.metadata import ModelMeta, ModelSpec
from cardamage.tasks import Task, TaskKind

ORIGINAL_SIZE = 160


def _load_keras_or_savedmodel(path: Path):
    """A .keras/.h5 file, or a TensorFlow SavedModel directory as the original saved them."""
    import keras

    if not path.exists():
        raise CardamageError(f"model not found: {path}")
    try:
        if path.is_dir():
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
            return lambda x: _first_output(layer(x))
        model = keras.saving.load_model(path, compile=False)
        return lambda x: model(x, training=False)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CardamageError(f"cannot load model {path}: {reason}") from None


def _first_output(outputs):
    return next(iter(outputs.values())) if isinstance(outputs, dict) else outputs


def _raw_labels(path: Path) -> tuple[str, ...]:
    """Label file lines as the original read them: NULL stays, as it was a trained output."""
    try:
        lines = [s.strip() for s in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise CardamageError(f"cannot read label file {path}: {e}") from None
    labels = tuple(s for s in lines if s)
    if not labels:
        raise CardamageError(f"label file {path} lists no labels")
    return labels


class OriginalEngine:
    """Three models, three backbone passes: kept for compatibility, not speed."""

    name = "original"

    def __init__(self, models: dict[str, object]) -> None:
        self.models = models

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(pixels, dtype=np.float32) / 255.0  # the original's preprocessing
        return {name: np.asarray(model(x)) for name, model in self.models.items()}


def _task(name: str, keys: OriginalTaskKeys) -> Task:
    kind = TaskKind.MULTICLASS if name == "severity" else TaskKind.MULTILABEL
    labels = _raw_labels(keys.label_fp)
    return Task(name, kind, labels, (keys.conf_threshold,) * len(labels))


def load_original(cfg: AppConfig) -> Predictor:
    found = cfg.original_tasks()
    tasks = [_task(name, keys) for name, keys in found.items()]
    engine = OriginalEngine({n: _load_keras_or_savedmodel(k.model_fp) for n, k in found.items()})
    meta = ModelMeta(ModelSpec("original", "", ORIGINAL_SIZE), tasks, {"format": "original"})
    return Predictor(meta, engine, cfg.thresholds, quality=cfg.quality)


def load_app_predictor(cfg: AppConfig) -> Predictor:
    """The model an application config names (a run, or the original's three), with its
    thresholds and quality rules."""
    if cfg.model is None:
        return load_original(cfg)
    return Predictor.load(cfg.model, cfg.engine, cfg.thresholds, cfg.quality)
