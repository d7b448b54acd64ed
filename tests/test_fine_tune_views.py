"""Fine-tuning the top layers on cached activations (``fine_tune.cached_views``): where the
network is cut, what the cache holds, which view each epoch trains on, and a tuned model whose
out-of-fold scores are its own on the photos."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from model_support import tiny_fine_tuning

from cardamage.config import AugmentConfig
from cardamage.data.images import load_image
from cardamage.data.manifest import load_manifest
from cardamage.model.backbones import build_backbone
from cardamage.model.multitask import build_model
from cardamage.synthetic import generate_dataset
from cardamage.train.activations import cached_activations, view_batches
from cardamage.train.features import FeatureRequest
from cardamage.train.folds import Inputs, model_spec, tuned_outputs
from cardamage.train.pixels import PixelAugment, cached_pixels, cached_size
from cardamage.train.trainer import fine_tune

SIZE = 32
N = 12


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), n=N, size=48, seed=5)


def _photos(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize(
    ("architecture", "alpha", "size"), [("mobilenet", 0.25, 32), ("mobilenetv2", 0.35, 64)]
)
def test_the_cut_is_one_tensor_at_or_below_the_first_tuned_layer(architecture, alpha, size) -> None:
    backbone = build_backbone(architecture, "none", size, alpha, False, (1,))
    layers = backbone.core.layers
    for n in (10, 30, 60):
        cut = backbone.tuned_cut(n)
        index = [layer.name for layer in layers].index(cut)
        assert index <= len(layers) - n  # every tuned layer is above it
        bottom, top = backbone.split(cut)
        x = np.random.default_rng(n).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
        np.testing.assert_allclose(top(bottom(x)), backbone(x), atol=1e-5)
    assert backbone.tuned_cut(-1) is None  # every layer tuned: nothing below to cache
    assert backbone.tuned_cut(len(layers)) is None
    several_scales = build_backbone(architecture, "none", 64, alpha, False, (1, 2))
    assert several_scales.tuned_cut(30) is None


def test_mobilenetv2_top_100_is_cached_where_it_is_narrow() -> None:
    backbone = build_backbone("mobilenetv2", "none", 224, 1.0, False, (1,))
    cut = backbone.tuned_cut(100)
    assert cut == "block_6_expand"  # 28 x 28 x 32 enter it; 28 x 28 x 192 the first tuned layer
    assert backbone.core.get_layer(cut).input.shape[1:] == (28, 28, 32)


def _activations(dataset: Path, cache: Path, views: int = 3, seed: int = 4):
    paths = sorted((dataset.parent / "images").iterdir())
    keras.utils.set_random_seed(0)  # random weights: the cache key's seed stands for them
    backbone = build_backbone("mobilenet", "none", SIZE, 0.25, False, (1,))
    cut = backbone.tuned_cut(20)
    bottom, _ = backbone.split(cut)
    spec = model_spec(_config(dataset, cache))
    request = FeatureRequest(spec, paths, AugmentConfig(), views, seed, cut, 0.125)
    pixels = cached_pixels(paths, cached_size(SIZE, 0.125), cache)
    augment = PixelAugment(SIZE, flip=True, brightness=0.15, contrast=0.2)
    return cached_activations(bottom, request, pixels, augment, cache), bottom, paths


def test_view_zero_is_the_photo_as_predicted_and_the_others_are_seeded_views(
    dataset: Path, tmp_path: Path
) -> None:
    activations, bottom, paths = _activations(dataset, tmp_path / "cache")
    values = activations.values
    assert values.shape[:2] == (3, N) and values.dtype == np.float32
    photos = np.stack([load_image(p, SIZE) for p in paths]).astype(np.float32)
    np.testing.assert_allclose(values[0], bottom.predict(photos, verbose=0), atol=1e-5)
    assert not np.allclose(values[1], values[0]) and not np.allclose(values[2], values[1])
    [entry] = [e for e in (tmp_path / "cache").iterdir() if (e / "features.npy").exists()]
    stamp = (entry / "features.npy").stat().st_mtime_ns
    again, _, _ = _activations(dataset, tmp_path / "cache")
    np.testing.assert_array_equal(again.values, values)
    assert (entry / "features.npy").stat().st_mtime_ns == stamp  # read back, not computed again
    other_seed, _, _ = _activations(dataset, tmp_path / "cache", seed=5)
    np.testing.assert_array_equal(other_seed.values[0], values[0])  # the photo as it is
    assert not np.allclose(other_seed.values[1], values[1])


def test_each_epoch_trains_on_every_photos_next_augmented_view() -> None:
    views, n = 3, 10
    # each activation holds its (view, row), so a batch tells which view of which photo it is
    values = np.zeros((1 + views, n, 2), np.float32)
    values[..., 0] = np.arange(1 + views)[:, None]
    values[..., 1] = np.arange(n)[None, :]
    rows = np.arange(2, n)  # a fold's training rows
    targets = {"task": rows.astype(np.float32)[:, None]}
    batches = iter(view_batches(values, rows, (targets,), 3, seed=0, epochs=views))
    seen: dict[int, list[int]] = {}
    for _ in range(views):  # 3 epochs of 3 batches (8 photos)
        epoch = []
        for _ in range(3):
            x, y = next(batches)
            x, y = np.asarray(x), np.asarray(y["task"])[:, 0]
            np.testing.assert_array_equal(x[:, 1], y)  # each target with its own photo
            epoch += list(zip(x[:, 1].astype(int), x[:, 0].astype(int), strict=True))
        assert sorted(r for r, _ in epoch) == list(rows)  # every photo once an epoch
        for row, view in epoch:
            seen.setdefault(row, []).append(view)
    assert all(sorted(v) == [1, 2, 3] for v in seen.values())  # each view once, never view 0
    assert len({tuple(v) for v in seen.values()}) > 1  # from a random first view
    with pytest.raises(StopIteration):  # it ends with the training: nothing left running
        next(batches)


def _config(dataset: Path, out: Path):
    return tiny_fine_tuning(
        dataset,
        out,
        batch_size=4,
        views=1,
        fine_tune_layers=20,
        fine_tune_warmup_epochs=1,
        fine_tune_cached_views=2,
    )


def test_tuning_on_activations_trains_the_top_and_scores_as_the_model_does(
    dataset: Path, tmp_path: Path
) -> None:
    cfg = _config(dataset, tmp_path)
    tasks = cfg.build_tasks()
    manifest, _ = load_manifest(dataset, dataset.parent, tasks)
    inputs = Inputs(cfg, tasks, manifest)
    rows = np.arange(N)
    data = inputs.fold(rows[:8], rows[8:])
    assert data.activations is not None and data.activations.values.shape[0] == 3
    keras.utils.set_random_seed(0)
    model = build_model(model_spec(cfg), tasks)
    backbone = model.branch_backbones[0]
    backbone.set_weights(inputs.backbone_weights)
    photos = np.stack([load_image(p, SIZE) for p in inputs.paths]).astype(np.float32)
    # the heads' warm-up features: the layers above the cut on the cached views, no photo
    # decoded again; view 0 as the backbone makes them from the photo
    assert inputs.features.shape[:2] == (1, N)
    np.testing.assert_allclose(inputs.features[0], backbone.predict(photos, verbose=0), atol=1e-5)
    cut = [layer.name for layer in backbone.core.layers].index(data.activations.cut)
    before = [layer.get_weights() for layer in backbone.core.layers]
    fine_tune(model, [backbone], tasks, data, cfg, tmp_path / "log", seed=0)
    changed = [
        any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), old, strict=True))
        for layer, old in zip(backbone.core.layers, before, strict=True)
    ]
    assert not any(changed[:cut])  # below the cut: as cached
    assert any(changed[-20:])  # the tuned layers learned
    scores = tuned_outputs(model, data.activations, data.paths, data.val, 4)
    direct = model.predict(photos[data.val], verbose=0)
    for task in tasks:
        np.testing.assert_allclose(scores[task.name], direct[task.name], atol=1e-5)
