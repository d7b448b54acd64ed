"""tune_top: the backbone's top stage trains on cached activations, and the model it ships
scores photos exactly as the cached activations said it would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_support import assert_fold_models_score_as_cached

from bench.common import normalise_batchnorm
from cardamage.config import load_train_config
from cardamage.model.backbones import BACKBONES, build_backbone
from cardamage.model.multitask import ModelBundle
from cardamage.synthetic import generate_dataset
from cardamage.train.crossval import cross_validate

TOP = BACKBONES["mobilenet"].top_starts


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("tune_top")
    data = generate_dataset(tmp / "synth", n=24, size=64, seed=5)
    weights = tmp / "pretrained.weights.h5"  # a "pretrained" file: BatchNorm stays frozen
    source = build_backbone("mobilenet", "none", 32, alpha=0.25)
    normalise_batchnorm(source, np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)))
    source.core.save_weights(weights)
    options = {
        "data": data,
        "out": tmp / "run",
        "backbone": "mobilenet",
        "alpha": 0.25,
        "weights": str(weights),
        "image_size": 32,
        "folds": 2,
        "epochs": 2,
        "views": 2,
        "tune_top": True,
        "tune_top_learning_rate": 1e-2,
        "cache_dir": tmp / "cache",
    }
    cross_validate(load_train_config(None, options))
    return tmp / "run", data.parent, weights


def _layers(model_dir: Path) -> dict[str, list[np.ndarray]]:
    layers = ModelBundle.load(model_dir).model.backbone.tunable_layers
    return {layer.name: layer.get_weights() for layer in layers if layer.weights}


def test_only_the_top_stage_trains_and_batchnorm_keeps_its_statistics(run: tuple) -> None:
    out, _, weights = run
    start = build_backbone("mobilenet", str(weights), 32, alpha=0.25)
    before = {layer.name: layer.get_weights() for layer in start.tunable_layers}
    after = _layers(out / "model")
    names = list(after)
    top = names[names.index(TOP) :]
    for name, values in after.items():
        same = all(np.array_equal(a, b) for a, b in zip(values, before[name], strict=True))
        trains = name in top and "bn" not in name
        assert same != trains, f"{name}: {'unchanged' if same else 'changed'}"


def test_cached_scores_are_the_shipped_fold_models_scores(run: tuple) -> None:
    out, root, _ = run
    assert_fold_models_score_as_cached(out, root)
