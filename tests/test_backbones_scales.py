"""scales: a run on a multi-scale backbone ships models that score photos exactly as the
features it cached said they would, and configs it cannot run are refused by field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from model_support import assert_fold_models_score_as_cached

from bench.common import normalise_batchnorm
from cardamage.config import load_train_config
from cardamage.errors import CardamageError
from cardamage.model.backbones import build_backbone
from cardamage.model.multitask import ModelBundle
from cardamage.synthetic import generate_dataset
from cardamage.train.crossval import cross_validate


def _options(tmp: Path, **extra) -> dict:
    return {
        "data": tmp / "synth" / "labels.csv",
        "out": tmp / "run",
        "backbone": "mobilenet",
        "alpha": 0.25,
        "image_size": 64,
        "scales": [1, 2],
        "folds": 2,
        "epochs": 2,
        "views": 2,
        "cache_dir": tmp / "cache",
    } | extra


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("multiscale")
    data = generate_dataset(tmp / "synth", n=24, size=64, seed=6)
    weights = tmp / "pretrained.weights.h5"  # statistics that tell the photos apart
    source = build_backbone("mobilenet", "none", 64, alpha=0.25)
    normalise_batchnorm(source, np.random.default_rng(0).uniform(0, 255, (16, 64, 64, 3)))
    source.core.save_weights(weights)
    cross_validate(load_train_config(None, _options(tmp, data=data, weights=str(weights))))
    return tmp / "run", data.parent


def test_the_model_records_its_scales(run: tuple) -> None:
    out, _ = run
    assert json.loads((out / "model" / "model.json").read_text())["spec"]["scales"] == [1, 2]
    assert ModelBundle.load(out / "model").spec.scales == (1, 2)


def test_cached_scores_are_the_shipped_fold_models_scores(run: tuple) -> None:
    out, root = run
    assert_fold_models_score_as_cached(out, root)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"scales": [1, 5]}, "scales: Value error, scales [1, 5]: give ascending whole factors"),
        ({"scales": [1, 4]}, "image_size 64 / 4 is not a multiple of 32 px"),
        ({"scales": []}, "scales"),
        ({"tune_top": True}, "tune_top trains one scale"),
    ],
)
def test_configs_it_cannot_run_are_refused_by_field(tmp_path: Path, extra, message) -> None:
    with pytest.raises(CardamageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_train_config(None, _options(tmp_path, **extra))


def test_standardize_with_tune_top_is_refused(tmp_path: Path) -> None:
    options = _options(tmp_path, scales=[1], tune_top=True, standardize=True)
    with pytest.raises(CardamageError, match="standardize adapts to cached pooled features"):
        load_train_config(None, options)


def test_the_real_photos_preset_is_a_config_train_takes(tmp_path: Path) -> None:
    preset = Path(__file__).resolve().parents[1] / "configs" / "real-photos.json"
    cfg = load_train_config(preset, {"data": tmp_path / "labels.csv", "out": tmp_path / "run"})
    assert cfg.model.scales == (1, 3) and cfg.model.image_size == 480
    assert cfg.model.standardize and cfg.model.head_units == 0 and cfg.model.head_l2 > 0
