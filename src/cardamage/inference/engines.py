"""Inference engines: a callable from a batch of pixels to per-task probabilities.

The Predictor does everything else (decoding, thresholds, output shape), so engines stay small
and interchangeable, and their outputs can be compared one to one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from cardamage.errors import CardamageError
from cardamage.model.metadata import MODEL_FILE


class Engine(Protocol):
    name: str

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (n, size, size, 3) pixels in [0, 255] -> {task name: (n, labels) scores}."""
        ...


class KerasEngine:
    name = "keras"

    def __init__(self, model) -> None:
        self.model = model

    @classmethod
    def load(cls, model_dir: Path) -> KerasEngine:
        from cardamage.model.multitask import ModelBundle

        return cls(ModelBundle.load(model_dir).model)

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model.predict_on_batch(np.asarray(pixels, dtype=np.float32))
        return {name: np.asarray(value) for name, value in out.items()}


ENGINES = {"keras": KerasEngine}


def load_engine(name: str, model_dir: Path) -> Engine:
    if name not in ENGINES:
        raise CardamageError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
    if name == "keras" and not (model_dir / MODEL_FILE).exists():
        raise CardamageError(f"no Keras model in {model_dir} (missing {MODEL_FILE})")
    return ENGINES[name].load(model_dir)
