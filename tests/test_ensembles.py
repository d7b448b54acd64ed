"""Prediction-time ensembles inside the model: a run's fold heads on one backbone pass (or, for
tuned folds, each fold on its own backbone) and flip test-time augmentation score as their parts
averaged, survive saving, and export to ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from bench.common import normalise_batchnorm
from cardamage.config import load_train_config
from cardamage.errors import CardamageError
from cardamage.inference.explain import Explainer
from cardamage.inference.export import export_model, synthetic_images
from cardamage.inference.predictor import Predictor
from cardamage.model.backbones import build_backbone
from cardamage.model.metadata import META_FILE, ModelMeta, ModelSpec
from cardamage.model.multitask import ModelBundle, build_model, fold_ensemble, with_flip_tta
from cardamage.synthetic import generate_dataset
from cardamage.tasks import default_tasks
from cardamage.train.crossval import cross_validate
from cardamage.train.folds import predict_images

TASKS = default_tasks()
SIZE = 32
SPEC = ModelSpec("mobilenet", "none", SIZE, alpha=0.25, head_units=0, dropout=0.0)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return synthetic_images(n, SIZE, seed=seed).astype(np.float32)


def _scores(model, pixels: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.asarray(v) for name, v in model.predict_on_batch(pixels).items()}


@pytest.fixture(scope="module")
def folds() -> list:
    """Three "fold models": one backbone's weights (batch norms set from photos, so images
    differ), each with its own random heads."""
    models = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        models.append(build_model(SPEC, TASKS))
    normalise_batchnorm(models[0], _pixels(16, seed=3))
    for model in models[1:]:
        model.backbone.set_weights(models[0].backbone.get_weights())
    return models


@pytest.fixture(scope="module")
def tuned_folds(folds) -> list:
    """Two fold models whose backbones differ too, as fine-tuned folds' do."""
    models = [with_flip_tta(model, False) for model in folds[:2]]  # copies
    for seed, model in enumerate(models):
        normalise_batchnorm(model, _pixels(16, seed=20 + seed))
    return models


def _train(tmp: Path, extra: dict) -> tuple[Path, Path]:
    """A 2-fold run that ships its fold ensemble (``extra``: more options)."""
    data = generate_dataset(tmp / "synth", n=24, size=64, seed=4)
    weights = tmp / "pretrained.weights.h5"  # statistics that tell the photos apart
    source = build_backbone("mobilenet", "none", SIZE, alpha=0.25)
    normalise_batchnorm(source, _pixels(16, seed=5))
    source.core.save_weights(weights)
    options = {
        "data": data, "out": tmp / "run", "backbone": "mobilenet", "alpha": 0.25,
        "weights": str(weights), "image_size": SIZE, "folds": 2, "epochs": 2, "views": 1,
        "head_units": 0, "dropout": 0.0, "final_model": "fold_ensemble",
        "cache_dir": tmp / "cache",
    }  # fmt: skip
    cross_validate(load_train_config(None, options | extra))
    return tmp / "run", data.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Frozen folds' heads on one backbone, with flip test-time augmentation."""
    return _train(tmp_path_factory.mktemp("ensemble"), {"standardize": True, "flip_tta": True})


def _assert_the_mean_of_the_fold_models(out: Path, root: Path) -> None:
    images = sorted((root / "images").glob("*.jpg"))[:5]
    shipped = predict_images(ModelBundle.load(out / "model").model, images, 8)
    per_fold = [
        predict_images(ModelBundle.load(out / "folds" / f"fold_{k}" / "model").model, images, 8)
        for k in (1, 2)
    ]
    for name, value in shipped.items():
        np.testing.assert_allclose(value, (per_fold[0][name] + per_fold[1][name]) / 2, atol=1e-6)
    assert shipped["severity"].std(axis=0).max() > 1e-4  # the photos are told apart


def test_a_fold_ensemble_scores_the_mean_of_its_fold_models(folds) -> None:
    pixels = _pixels(6)
    ensemble = fold_ensemble(folds)
    expected = [_scores(model, pixels) for model in folds]
    for name, value in _scores(ensemble, pixels).items():
        np.testing.assert_allclose(value, np.mean([e[name] for e in expected], axis=0), atol=1e-6)
    assert expected[0]["severity"].std(axis=0).max() > 1e-3  # the images are told apart
    assert np.abs(expected[0]["severity"] - expected[1]["severity"]).max() > 1e-3  # heads differ
    assert len(ensemble.branch_backbones) == 1  # one backbone pass for every fold's heads


def test_flip_tta_scores_a_photo_and_its_mirror_alike(folds) -> None:
    pixels = _pixels(6)
    mirrored = pixels[:, :, ::-1]
    single, tta = folds[0], with_flip_tta(folds[0], True)
    plain, flipped = _scores(single, pixels), _scores(single, mirrored)
    for name, value in _scores(tta, pixels).items():
        np.testing.assert_allclose(value, _scores(tta, mirrored)[name], atol=1e-6)
        np.testing.assert_allclose(value, (plain[name] + flipped[name]) / 2, atol=1e-6)
    assert np.abs(plain["severity"] - flipped["severity"]).max() > 1e-4  # the mirror differs


@pytest.mark.slow
def test_the_shipped_ensemble_is_the_mean_of_the_saved_fold_models(run: tuple) -> None:
    out, root = run
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["spec"]["ensemble"] == 2 and meta["spec"]["flip_tta"] is True
    assert meta["info"]["final_model"] == "fold_ensemble"
    assert meta["spec"]["ensemble_backbones"] is False  # one backbone pass
    _assert_the_mean_of_the_fold_models(out, root)


@pytest.mark.slow
def test_a_fine_tuned_run_ships_each_fold_on_its_own_backbone(tmp_path: Path) -> None:
    extra = {"fine_tune_layers": -1, "fine_tune_epochs": 1, "fine_tune_batchnorm": "frozen"}
    out, root = _train(tmp_path, extra)
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["spec"]["ensemble"] == 2 and meta["spec"]["ensemble_backbones"] is True
    _assert_the_mean_of_the_fold_models(out, root)


def test_saving_and_loading_keeps_both_options(folds, tmp_path: Path) -> None:
    model = with_flip_tta(fold_ensemble(folds), True)
    ModelBundle(model, model.spec, TASKS).save(tmp_path)
    again = ModelBundle.load(tmp_path)
    assert again.spec.ensemble == again.model.spec.ensemble == 3
    assert again.spec.flip_tta and again.model.spec.flip_tta
    pixels = _pixels(4)
    for name, value in _scores(again.model, pixels).items():
        np.testing.assert_allclose(value, _scores(model, pixels)[name], atol=1e-6)


@pytest.mark.slow
def test_onnx_scores_ensembles_and_flip_tta_as_keras(folds, tuned_folds, tmp_path: Path) -> None:
    images = list(synthetic_images(5, 48, seed=9))
    for name, model in {
        "flip": with_flip_tta(folds[0], True),
        "ensemble": fold_ensemble(folds),
        "tuned ensemble": fold_ensemble(tuned_folds, own_backbones=True),
    }.items():
        ModelBundle(model, model.spec, TASKS).save(tmp_path / name)
        export_model(tmp_path / name, "onnx")
        keras_predictions = Predictor.load(tmp_path / name, engine="keras").predict(images)
        onnx_predictions = Predictor.load(tmp_path / name, engine="onnx").predict(images)
        for a, b in zip(keras_predictions, onnx_predictions, strict=True):
            for task in TASKS:
                np.testing.assert_allclose(
                    b.tasks[task.name].scores, a.tasks[task.name].scores, atol=1e-4
                )


def test_grad_cam_explains_the_unflipped_pass_and_the_members_mean(folds) -> None:
    pixels = _pixels(3)
    single = Explainer(folds[0]).heatmaps(pixels, TASKS)
    tta = Explainer(with_flip_tta(folds[0], True)).heatmaps(pixels, TASKS)
    twins = Explainer(fold_ensemble([folds[0], folds[0]])).heatmaps(pixels, TASKS)
    for name, heatmap in single.items():
        np.testing.assert_allclose(tta[name], heatmap, atol=1e-5)
        np.testing.assert_allclose(twins[name], heatmap, atol=1e-5)
    assert Explainer(fold_ensemble(folds)).heatmaps(pixels, TASKS)["severity"].shape == (3, 32, 32)


def test_an_ensemble_refuses_to_name_one_head_per_task(folds) -> None:
    with pytest.raises(CardamageError, match=r"model\.branches"):
        _ = fold_ensemble(folds).heads


def test_tuned_folds_each_keep_their_backbone_in_the_ensemble(tuned_folds, tmp_path) -> None:
    pixels = _pixels(6)
    ensemble = fold_ensemble(tuned_folds, own_backbones=True)
    assert len(ensemble.branch_backbones) == 2  # one pass per fold
    expected = [_scores(model, pixels) for model in tuned_folds]
    for name, value in _scores(ensemble, pixels).items():
        np.testing.assert_allclose(value, np.mean([e[name] for e in expected], axis=0), atol=1e-6)
    # on the first fold's backbone alone, the second fold's heads would score otherwise
    shared = _scores(fold_ensemble(tuned_folds), pixels)
    assert np.abs(shared["severity"] - _scores(ensemble, pixels)["severity"]).max() > 1e-4
    ModelBundle(ensemble, ensemble.spec, TASKS).save(tmp_path)
    again = ModelBundle.load(tmp_path)
    assert again.spec.ensemble_backbones and again.model.spec.ensemble_backbones
    for name, value in _scores(again.model, pixels).items():
        np.testing.assert_allclose(value, _scores(ensemble, pixels)[name], atol=1e-6)


def test_a_model_json_with_no_heads_is_refused(tmp_path: Path) -> None:
    ModelMeta(SPEC, TASKS, {}).write(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    meta["spec"]["ensemble"] = 0
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CardamageError, match="ensemble 0"):
        ModelMeta.read(tmp_path)
