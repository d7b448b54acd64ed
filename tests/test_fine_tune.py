"""Fine-tuning: the pixel cache and its augmentation, what a tuned backbone changes and keeps,
and a tuned model that every engine and export scores alike.

One tiny network (MobileNet 0.25 at 32 px) with its batch norms set from the photos, so that
its scores differ from photo to photo and a wrong output or statistic would show.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from model_support import savedmodel_scores, tflite_scores, tiny_fine_tuning

from bench.common import normalise_batchnorm
from cardamage.data.images import load_image
from cardamage.data.manifest import load_manifest
from cardamage.inference.export import export_model
from cardamage.inference.predictor import Predictor
from cardamage.model.multitask import ModelBundle, build_model
from cardamage.synthetic import generate_dataset
from cardamage.train.folds import model_spec
from cardamage.train.pixels import PixelAugment, cached_pixels, cached_size, pixel_dataset
from cardamage.train.trainer import FoldData, fine_tune

SIZE = 32
N = 16


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), n=N, size=48, seed=5).parent


def _config(dataset: Path, out: Path, batchnorm: str):
    return tiny_fine_tuning(
        dataset / "labels.csv",
        out,
        batch_size=8,
        fine_tune_layers=-1,
        fine_tune_batchnorm=batchnorm,
    )


def _tune(dataset: Path, out: Path, batchnorm: str) -> tuple[ModelBundle, dict[str, np.ndarray]]:
    """A model with data-dependent batch norms, fine-tuned on 12 photos (4 validate): the
    tuned bundle and the backbone's weights before, by variable path."""
    cfg = _config(dataset, out, batchnorm)
    tasks = cfg.build_tasks()
    manifest, _ = load_manifest(cfg.data.data, cfg.image_root, tasks)
    paths = manifest.paths()
    pixels = cached_pixels(paths, cached_size(SIZE, cfg.fine_tune.crop), cfg.run.cache_dir)
    keras.utils.set_random_seed(0)
    model = build_model(model_spec(cfg), tasks)
    normalise_batchnorm(model, np.stack([load_image(p, SIZE) for p in paths]).astype(np.float32))
    before = {v.path: np.array(v) for v in model.branch_backbones[0].variables}
    targets = {t.name: manifest.targets(t) for t in tasks}
    rows = np.arange(N)
    data = FoldData(np.zeros((1, N, 1)), targets, paths, rows[:12], rows[12:], pixels)
    fine_tune(model, model.branch_backbones, tasks, data, cfg, out / "log", seed=0)
    return ModelBundle(model, model_spec(cfg), tasks), before


@pytest.fixture(scope="module")
def tuned(dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    return _tune(dataset, tmp_path_factory.mktemp("frozen-bn"), "frozen")


def _changed(bundle: ModelBundle, before: dict[str, np.ndarray], kind: str) -> list[bool]:
    """For each backbone variable whose path ends in ``kind``: did fine-tuning change it?"""
    return [
        not np.array_equal(np.array(v), before[v.path])
        for v in bundle.model.branch_backbones[0].variables
        if v.path.endswith(kind)
    ]


def test_fine_tuning_trains_the_backbone_and_keeps_frozen_batchnorm(tuned) -> None:
    bundle, before = tuned
    assert all(_changed(bundle, before, "kernel"))  # every convolution learned
    for statistic in ("moving_mean", "moving_variance", "gamma", "beta"):
        changed = _changed(bundle, before, statistic)
        assert changed and not any(changed), statistic


@pytest.mark.slow
def test_batchnorm_learns_when_asked(dataset: Path, tmp_path: Path) -> None:
    bundle, before = _tune(dataset, tmp_path, "train")
    assert all(_changed(bundle, before, "moving_mean"))
    assert all(_changed(bundle, before, "kernel"))


@pytest.mark.slow
def test_every_engine_and_export_scores_a_tuned_model_like_keras(
    tuned, dataset: Path, tmp_path: Path
):
    """ONNX, its int8 copy, SavedModel and TFLite of a tuned model (BatchNorm frozen in
    inference mode, every convolution changed) score like Keras. int8 is held loosely: a tiny
    network amplifies rounding (see test_export)."""
    bundle, _ = tuned
    bundle.save(tmp_path / "model")
    export_model(tmp_path, "onnx", int8=True)
    photos = sorted((dataset / "images").iterdir())
    engines = ("keras", "onnx", "onnx-int8")
    predictions = {e: Predictor.load(tmp_path, engine=e).predict(photos) for e in engines}
    for task in bundle.tasks:
        keras_scores, onnx_scores, int8_scores = (
            np.stack([p.tasks[task.name].scores for p in predictions[e]]) for e in engines
        )
        np.testing.assert_allclose(onnx_scores, keras_scores, atol=1e-4)
        assert np.abs(int8_scores - keras_scores).mean() < 0.25
        assert keras_scores.std(axis=0).max() > 1e-3  # the photos are told apart
    predictor = Predictor.load(tmp_path, engine="keras")
    pixels = np.stack([predictor.decode(photos[0]).pixels]).astype(np.float32)
    expected = predictor.scores(pixels)
    for served in (savedmodel_scores(tmp_path, pixels), tflite_scores(tmp_path, pixels)):
        for name, scores in expected.items():
            # the features (not probabilities) are larger: TFLite's rounding shows more
            np.testing.assert_allclose(served[name], scores, rtol=1e-3, atol=1e-4)


def test_pixels_are_decoded_once_as_the_model_sees_them(dataset: Path, tmp_path: Path) -> None:
    paths = sorted((dataset / "images").iterdir())
    pixels = cached_pixels(paths, 36, tmp_path)
    assert pixels.shape == (N, 36, 36, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[3], load_image(paths[3], 36))
    [entry] = [p for p in tmp_path.iterdir()]
    stamp = (entry / "pixels.npy").stat().st_mtime_ns
    assert cached_pixels(paths, 36, tmp_path).shape == pixels.shape
    assert (entry / "pixels.npy").stat().st_mtime_ns == stamp  # read back, not decoded again
    assert [p.name for p in tmp_path.iterdir()] == [entry.name]  # no temporary left behind
    cached_pixels(paths[:-1], 36, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # other photos, another entry


def _epochs(ds, n: int) -> list[np.ndarray]:
    return [np.concatenate([np.asarray(x) for x, _ in ds]) for _ in range(n)]


def test_augmentation_is_seeded_and_new_every_epoch() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (1, 36, 36, 3), dtype=np.uint8)
    augment = PixelAugment(SIZE, flip=True, brightness=0.15, contrast=0.2)

    def dataset(seed: int):  # one photo, so no reshuffle can hide repeated draws
        rows = np.zeros(1, np.int64)
        return pixel_dataset(pixels, rows, (rows,), 4, size=SIZE, augment=augment, seed=seed)

    first, second = _epochs(dataset(1), 2)
    assert first.shape == (1, SIZE, SIZE, 3) and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 255
    assert not np.array_equal(first, second)  # new draws for the same photo every epoch
    np.testing.assert_array_equal(_epochs(dataset(1), 1)[0], first)  # the same seed, the same
    assert not np.array_equal(_epochs(dataset(2), 1)[0], first)


def test_validation_photos_keep_their_order_and_whole_frame() -> None:
    pixels = np.zeros((3, 36, 36, 3), np.uint8)
    pixels[1, :, :18] = 200  # the left half bright: a crop or flip would move it
    ds = pixel_dataset(pixels, np.arange(3), (np.arange(3),), 2, size=SIZE, augment=None, seed=0)
    photos = np.concatenate([np.asarray(x) for x, _ in ds])
    assert [int(y) for _, ys in ds for y in ys] == [0, 1, 2]
    assert photos.shape == (3, SIZE, SIZE, 3)
    assert photos[1, :, :14].min() > 190 and photos[1, :, 18:].max() < 10
