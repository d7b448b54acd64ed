"""Shared fixtures: a tiny random-weight model saved the way training saves one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench.common import normalise_batchnorm

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_SIZE = 32


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MobileNet 0.25 at 32 px, random weights with batch-norm statistics set from images:
    builds in a second and gives different images different scores."""
    import keras

    from cardamage.model.metadata import ModelSpec
    from cardamage.model.multitask import ModelBundle, build_model
    from cardamage.tasks import default_tasks

    keras.utils.set_random_seed(0)
    spec = ModelSpec(backbone="mobilenet", weights="none", image_size=TINY_SIZE, alpha=0.25)
    tasks = default_tasks()
    model = build_model(spec, tasks)
    rng = np.random.default_rng(0)
    normalise_batchnorm(model, rng.uniform(0, 255, (16, TINY_SIZE, TINY_SIZE, 3)))
    out = tmp_path_factory.mktemp("tiny_model")
    ModelBundle(model, spec, tasks, {"note": "random weights"}).save(out)
    return out


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A small real JPEG on disk."""
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(path)
    return path
