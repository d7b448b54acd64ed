"""Every registered backbone builds, owns its preprocessing, and fails with a clear message."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from bench.common import normalise_batchnorm
from cardamage.errors import CardamageError
from cardamage.model.backbones import BACKBONES, build_backbone
from cardamage.model.metadata import ModelMeta, ModelSpec
from cardamage.model.multitask import build_model
from cardamage.tasks import default_tasks

SMALL = {"mobilenet": 0.25, "mobilenetv2": 0.35}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_and_predicts(name: str) -> None:
    spec = ModelSpec(backbone=name, weights="none", image_size=32, alpha=SMALL.get(name))
    model = build_model(spec, default_tasks())
    out = model.predict(np.full((2, 32, 32, 3), 128, np.float32), verbose=0)
    assert out["severity"].shape == (2, 4)
    np.testing.assert_allclose(out["severity"].sum(axis=1), 1, atol=1e-5)  # softmax
    assert out["location"].shape == (2, 3) and out["damage_type"].shape == (2, 4)
    assert ((out["location"] > 0) & (out["location"] < 1)).all()  # sigmoid
    assert len(model.stacks) == 1  # one shared backbone for all tasks
    assert set(model.backbones.values()) == {model.backbone}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_features_are_the_keras_application_run_directly(name: str) -> None:
    """The backbone's features are those of the keras.applications model (pooling "avg") on
    the pixels preprocessed as its registry entry says: the same weights, the same numbers."""
    backbone = build_backbone(name, "none", 32, SMALL.get(name))
    spec = BACKBONES[name]
    kwargs = {"alpha": SMALL[name]} if name in SMALL else {}
    app = spec.constructor(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg", **kwargs
    )
    app.set_weights(backbone.core.get_weights())
    x = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    direct = app.predict(x / 127.5 - 1 if spec.preprocessing == "tf" else x, verbose=0)
    np.testing.assert_allclose(backbone.predict(x, verbose=0), direct, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_mid_level_features_add_a_pooled_middle_block_to_the_top(name: str) -> None:
    """The same layers and weights: the top features are unchanged, the middle block's pooled
    channels follow them."""
    plain = build_backbone(name, "none", 32, SMALL.get(name))
    both = build_backbone(name, "none", 32, SMALL.get(name), mid_level=True)
    both.set_weights(plain.get_weights())
    mid_channels = both.core.get_layer(BACKBONES[name].mid_layer).output.shape[-1]
    assert both.output_shape[-1] == plain.output_shape[-1] + mid_channels
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    top = plain.predict(x, verbose=0)
    np.testing.assert_allclose(both.predict(x, verbose=0)[:, : top.shape[1]], top, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_split_backbone_computes_the_backbone_in_two_parts(name: str) -> None:
    """What tune_top caches (the bottom) and trains (the top) make up the backbone exactly,
    with its own layers: training the top trains the backbone."""
    backbone = build_backbone(name, "none", 32, SMALL.get(name), mid_level=True)
    bottom, top = backbone.split()
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(top(bottom(x))), np.asarray(backbone(x)))
    core_layers = {id(layer) for layer in backbone.tunable_layers}
    top_layers = [
        x for part in top.layers if isinstance(part, keras.Model) for x in part.layers[1:]
    ]
    assert top_layers and all(id(layer) in core_layers for layer in top_layers)
    assert top_layers[0].name == BACKBONES[name].top_starts


def test_scales_join_the_features_of_the_photo_shrunk_by_each_factor() -> None:
    """Each scale's part is the one-scale backbone, same weights, on the photo box-averaged by
    its factor; the parts follow one another in ascending factors."""
    multi = build_backbone("mobilenetv2", "none", 192, 0.35, mid_level=True, scales=(1, 2, 3))
    x = np.random.default_rng(4).uniform(0, 255, (3, 192, 192, 3)).astype(np.float32)
    normalise_batchnorm(multi, x)
    parts = np.split(multi.predict(x, verbose=0), 3, axis=1)
    for factor, part in zip((1, 2, 3), parts, strict=True):
        size = 192 // factor
        single = build_backbone("mobilenetv2", "none", size, 0.35, mid_level=True)
        single.core.set_weights(multi.core.get_weights())
        shrunk = x.reshape(3, size, factor, size, factor, 3).mean(axis=(2, 4))
        np.testing.assert_allclose(part, single.predict(shrunk, verbose=0), atol=1e-3)  # float32
    assert not np.allclose(parts[0], parts[1], atol=1e-3)  # the scales see different things


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        ((), "ascending whole factors of image_size 96"),
        ((1, 5), "ascending whole factors of image_size 96"),
        ((2, 1), "ascending whole factors of image_size 96"),
        ((1, 1), "ascending whole factors of image_size 96"),
        ((0, 1), "ascending whole factors of image_size 96"),
        ((1, 2), "image_size 96 / 2 is not a multiple of 32 px"),
        ((1, 6), "image_size 96 / 6 is not a multiple of 32 px"),
    ],
)
def test_scales_the_backbone_cannot_run_are_refused(scales, message) -> None:
    with pytest.raises(CardamageError, match=message):
        build_backbone("mobilenet", "none", 96, 0.25, scales=scales)


def test_tune_top_refuses_a_multiscale_backbone() -> None:
    backbone = build_backbone("mobilenet", "none", 64, 0.25, scales=(1, 2))
    with pytest.raises(CardamageError, match="tune_top trains one scale"):
        backbone.split()


def test_scales_survive_the_model_file_round_trip(tmp_path: Path) -> None:
    spec = ModelSpec("mobilenet", "none", 64, alpha=0.25, scales=(1, 2))
    ModelMeta(spec, default_tasks(), {}).write(tmp_path)
    assert ModelMeta.read(tmp_path).spec == spec


def test_tf_mode_backbones_scale_pixels_to_unit_range() -> None:
    backbone = build_backbone("mobilenetv2", "none", 32, alpha=0.35)
    rescale = backbone.preprocessing
    x = np.array([[[[0.0, 127.5, 255.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(rescale(x)), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_per_task_layout_has_one_backbone_per_task() -> None:
    spec = ModelSpec("mobilenet", "none", 32, alpha=0.25, layout="per_task")
    model = build_model(spec, default_tasks())
    assert len(model.stacks) == 3 and len(set(map(id, model.backbones.values()))) == 3
    assert set(model.output.keys()) == {"severity", "location", "damage_type"}


def test_local_weights_file_loads(tmp_path: Path) -> None:
    source = build_backbone("mobilenet", "none", 32, alpha=0.25)
    core = source.core
    path = tmp_path / "mobilenet.weights.h5"
    core.save_weights(path)
    loaded = build_backbone("mobilenet", str(path), 32, alpha=0.25)
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "resnet51"}, "unknown backbone 'resnet51' \\(known: "),
        ({"weights": "/nowhere/w.h5"}, "weights file not found: /nowhere/w.h5"),
        ({"architecture": "resnet50v2", "alpha": 0.5}, "has no width multiplier"),
    ],
)
def test_bad_backbone_requests(kwargs: dict, message: str) -> None:
    args = {
        "architecture": "mobilenet",
        "weights": "none",
        "image_size": 32,
        "alpha": 0.25,
    } | kwargs
    with pytest.raises(CardamageError, match=message):
        build_backbone(**args)


def test_unreadable_weights_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(
        CardamageError, match=r"cannot build backbone 'mobilenet' with weights .*broken"
    ):
        build_backbone("mobilenet", str(bad), 32, alpha=0.25)
