"""A model trained on the generated cars knows what it was not trained on, on every engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.common import constructed, natural_photos
from cardamage.config import load_train_config
from cardamage.inference.predictor import Predictor
from cardamage.synthetic import generate_dataset
from cardamage.train.crossval import cross_validate
from cardamage.trust.distribution import DISTRIBUTION_FILE
from cardamage.trust.review import REVIEW_FILE

#: ImageNet MobileNet 0.25 (1.9 MB): random weights tell nothing apart (their features are
#: noise or constant), so a test of likeness needs pretrained ones.
WEIGHTS = Path(__file__).parents[2] / "shared" / "weights" / "mobilenet_v1_0.25_imagenet_no_top.h5"
SIZE = 128

pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs {WEIGHTS} (../shared)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trust")
    data = generate_dataset(root / "train", n=240, size=SIZE, seed=11)
    out = root / "run"
    options = {
        "data": data,
        "out": out,
        "backbone": "mobilenet",
        "alpha": 0.25,
        "weights": str(WEIGHTS),
        "image_size": SIZE,
        "folds": 3,
        "epochs": 3,
        "views": 1,
        "seed": 3,
        "cache_dir": root / "cache",
    }
    cross_validate(load_train_config(None, options))
    return out


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    data = generate_dataset(tmp_path_factory.mktemp("heldout"), n=200, size=SIZE, seed=12)
    return sorted((data.parent / "images").iterdir())


def test_training_saves_the_check_and_the_calibration(trained: Path):
    assert (trained / "model" / DISTRIBUTION_FILE).is_file()
    meta = json.loads((trained / "model" / "model.json").read_text())
    assert meta["calibration"]["severity"]["method"] == "temperature"
    assert meta["calibration"]["damage_type"]["method"] == "platt"
    summary = json.loads((trained / "summary.json").read_text())
    assert (summary["distribution"]["method"], summary["distribution"]["coverage"]) == (
        "residual",
        0.995,
    )
    review = json.loads((trained / "model" / REVIEW_FILE).read_text())
    assert set(review["thresholds"]) == {"severity", "location", "damage_type"}
    assert summary["review"]["coverage"] == 0.8
    assert set(summary["tasks"]["severity"]["calibration"]) == {"ece_before", "ece_after"}


def test_unseen_generated_photos_pass_at_the_calibrated_rate(trained: Path, heldout: list[Path]):
    predictor = Predictor.load(trained)
    passed = [p.trust.in_distribution.passed for p in predictor.predict(heldout)]
    assert np.mean(passed) >= 0.93


def test_photos_that_are_not_cars_are_flagged(trained: Path):
    predictor = Predictor.load(trained)
    strangers = constructed() + natural_photos()
    predictions = predictor.predict(strangers)
    flagged = [not p.trust.in_distribution.passed for p in predictions]
    assert np.mean(flagged) >= 0.9, [p.trust.in_distribution.typicality for p in predictions]
    assert all(p.abstain for p, f in zip(predictions, flagged, strict=True) if f)
    reason = next(p.abstain_reason for p in predictions if not p.trust.in_distribution.passed)
    assert reason.startswith("this does not look like a photo of a car")


@pytest.mark.slow
def test_onnx_engine_gives_the_same_in_distribution_scores_as_keras(
    trained: Path, heldout: list[Path]
):
    from cardamage.inference.export import export_model

    export_model(trained, "onnx")
    photos = heldout[:16]
    keras_scores = [
        p.trust.in_distribution.typicality for p in Predictor.load(trained).predict(photos)
    ]
    onnx = Predictor.load(trained, engine="onnx")
    onnx_scores = [p.trust.in_distribution.typicality for p in onnx.predict(photos)]
    np.testing.assert_allclose(onnx_scores, keras_scores, atol=0.01)
    strangers = constructed()[:8]
    assert [p.abstain for p in onnx.predict(strangers)] == [
        p.abstain for p in Predictor.load(trained).predict(strangers)
    ]
