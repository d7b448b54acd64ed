"""Grad-CAM heatmaps: the right feature map, the right score, the right place in the photo.

A hand-made model whose two channels are "bright" and "dark" pins down what each map must show;
untrained MobileNets check the maps against CAM, which Grad-CAM equals for a linear head.
"""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from types import SimpleNamespace

import keras
import matplotlib
import numpy as np
import pytest
from PIL import Image

from bench.common import normalise_batchnorm
from cardamage.errors import CardamageError
from cardamage.inference.engines import KerasEngine
from cardamage.inference.explain import Explainer, explain_image, overlay_png
from cardamage.inference.predictor import Predictor
from cardamage.model.backbones import BACKBONES, Backbone, BackboneSpec
from cardamage.model.metadata import ModelMeta, ModelSpec
from cardamage.model.multitask import ModelBundle, MultiTaskClassifier, build_model
from cardamage.tasks import Task, TaskKind, default_tasks

TASKS = default_tasks()
#: the top block's map alone (no mid level): the CAM the tests compute by hand
SPEC = ModelSpec("mobilenet", "none", 64, alpha=0.25, head_units=0, mid_level=False)
#: MobileNet's last convolutional feature map, named here independently of the explainer.
LAST_CONV = "conv_pw_13_relu"
TOY_SIZE, CELL = 64, 16
CORNERS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (row, column) quadrant of the bright patch


def _pixels(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module", params=["shared", "per_task"])
def mobilenet(request) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(replace(SPEC, layout=request.param), TASKS)


def test_heatmaps_are_finite_unit_maps_at_input_size_and_deterministic(mobilenet):
    explainer, pixels = Explainer(mobilenet), _pixels(3)
    maps = explainer.heatmaps(pixels, TASKS)
    assert list(maps) == [t.name for t in TASKS]
    for heatmap in maps.values():
        assert heatmap.shape == (3, 64, 64)
        assert np.isfinite(heatmap).all()
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
        assert np.allclose(heatmap.max(axis=(1, 2)), 1.0)  # each map scaled to its own peak
    again = explainer.heatmaps(pixels, TASKS)
    assert all(np.array_equal(maps[name], again[name]) for name in maps)


def _expected_cam(model: keras.Model, task: Task, pixels: np.ndarray) -> np.ndarray:
    """CAM of the predicted class on the 2x2 feature map: relu(A @ w_class), scaled to max 1."""
    core = model.backbones[task.name].core
    features = keras.Model(core.input, core.get_layer(LAST_CONV).output)
    kernel = model.heads[task.name].scores.kernel.numpy()
    predicted = np.argmax(model.predict_on_batch(pixels)[task.name], axis=-1)
    cam = np.maximum(
        np.einsum("nhwk,nk->nhw", features(pixels / 127.5 - 1).numpy(), kernel.T[predicted]), 0
    )
    return cam / cam.max(axis=(1, 2), keepdims=True)


def test_multiclass_map_is_cam_of_the_predicted_class_on_the_last_conv_map(mobilenet):
    """Also per backbone in the per_task layout: each task's map comes from its own backbone."""
    pixels, severity = _pixels(2, seed=1), TASKS[0]
    assert severity.multiclass
    heatmap = Explainer(mobilenet).heatmaps(pixels, [severity])["severity"]
    # bilinear upsampling keeps each corner pixel equal to its corner cell of the 2x2 map
    corners = heatmap[:, [0, -1]][:, :, [0, -1]]
    np.testing.assert_allclose(corners, _expected_cam(mobilenet, severity, pixels), atol=1e-4)


@keras.saving.register_keras_serializable(package="cardamage_tests")
class ToyBackbone(Backbone):
    """Features: the mean brightness and darkness of a 4x4 grid of cells."""

    def __init__(self, architecture: str, image_size: int, weights: str = "none", **kwargs) -> None:
        del weights, kwargs["alpha"], kwargs["mid_level"], kwargs["scales"]  # options it has not
        self.scale = keras.layers.Rescaling(1 / 255)
        self.cells = keras.layers.AveragePooling2D(CELL)
        self.conv = keras.layers.Conv2D(2, 1, activation="relu")
        self.pool = keras.layers.GlobalAveragePooling2D()
        pixels = keras.Input((image_size, image_size, 3))
        super().__init__(pixels, self.pool(self._map(pixels)), **kwargs)
        self.conv.set_weights([np.array([[[[1, -1]] * 3]]) / 3, np.array([0.0, 1.0])])
        self.architecture = architecture

    def _map(self, pixels: keras.KerasTensor) -> keras.KerasTensor:
        return self.conv(self.cells(self.scale(pixels)))

    def feature_maps(self, pixels: keras.KerasTensor):
        feature_map = self._map(pixels)
        return [feature_map], self.pool(feature_map)


@pytest.fixture
def toy_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKBONES, "toy", BackboneSpec("toy", None, "builtin", cls=ToyBackbone))


def _toy_model(tasks: list[Task], bias: tuple[float, float]) -> MultiTaskClassifier:
    """A model on the toy backbone; each task's logits are 10 x (bright, dark) + ``bias``."""
    spec = ModelSpec("toy", "none", TOY_SIZE, head_units=0, dropout=0.0)
    model = build_model(spec, tasks)
    for head in model.heads.values():
        head.scores.set_weights([10 * np.eye(2), np.array(bias)])
    return model


def _bright_corners() -> np.ndarray:
    """Four black images, each with one bright cell in a different corner."""
    images = np.zeros((4, TOY_SIZE, TOY_SIZE, 3), dtype=np.float32)
    for i, (row, col) in enumerate(CORNERS):
        r, c = row * (TOY_SIZE - CELL), col * (TOY_SIZE - CELL)
        images[i, r : r + CELL, c : c + CELL] = 255
    return images


@pytest.mark.parametrize(
    ("kind", "thresholds", "bias", "explains"),
    [
        (TaskKind.MULTICLASS, (0.5, 0.5), (20.0, 0.0), "bright"),  # bright class predicted
        (TaskKind.MULTICLASS, (0.5, 0.5), (0.0, 0.0), "dark"),  # dark class predicted
        (TaskKind.MULTILABEL, (0.5, 0.5), (20.0, -20.0), "bright"),  # only bright passes
        (TaskKind.MULTILABEL, (0.0, 0.0), (0.0, 0.0), "both"),  # both pass: their sum
        (TaskKind.MULTILABEL, (1.0, 1.0), (0.0, 0.0), "dark"),  # none passes: the top label
    ],
)
def test_map_follows_the_bright_patch_for_the_explained_labels(
    kind, thresholds, bias, explains, toy_backbone
):
    task = Task("light", kind, ("bright", "dark"), thresholds)
    heatmap = Explainer(_toy_model([task], bias)).heatmaps(_bright_corners(), [task])["light"]
    expected = {"bright": (1.0, 0.0), "dark": (0.0, 1.0), "both": (1.0, 1.0)}[explains]
    for image, (row, col) in zip(heatmap, CORNERS, strict=True):
        at_patch, opposite = image[-row, -col], image[row - 1, col - 1]  # the two corner pixels
        assert (at_patch, opposite) == pytest.approx(expected, abs=1e-6)
        if explains == "bright":
            peak_row, peak_col = np.unravel_index(np.argmax(image), image.shape)
            assert (peak_row >= TOY_SIZE // 2, peak_col >= TOY_SIZE // 2) == (row, col)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_model_is_explained_too(mixed_precision, toy_backbone):
    """Models trained on a GPU keep float16 layers: their float16 feature map must still work."""
    task = Task("light", TaskKind.MULTICLASS, ("bright", "dark"))
    explainer = Explainer(_toy_model([task], bias=(20.0, 0.0)))  # explains the bright class
    heatmap = explainer.heatmaps(_bright_corners(), [task])["light"]
    assert heatmap.dtype == np.float32
    assert heatmap[:, 0, 0] == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-3)


@pytest.mark.parametrize(
    ("backbone", "alpha", "mid_level"),
    [
        ("mobilenetv2", 0.35, False),
        ("mobilenetv2", 0.35, True),
        ("resnet50v2", None, False),
        ("efficientnetv2b0", None, True),
    ],
)
def test_every_backbone_gives_unit_maps(backbone, alpha, mid_level):
    """A 1x1 feature map at 32 px: the map is flat, but the gradient model must still build,
    with mid-level features too."""
    spec = ModelSpec(backbone, "none", 32, alpha=alpha, head_units=8, mid_level=mid_level)
    maps = Explainer(build_model(spec, TASKS)).heatmaps(_pixels(2, 32), TASKS)
    for heatmap in maps.values():
        assert heatmap.shape == (2, 32, 32)
        assert np.isfinite(heatmap).all() and heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_a_multiscale_map_adds_each_scales_cam():
    """Scales 1 and 2 of a linear-headed model: the logit is the sum of each scale's part, so
    the map is the sum of each scale's CAM, each upsampled to the photo (here 2x2 and 1x1)."""
    spec = replace(SPEC, scales=(1, 2), mid_level=False)
    keras.utils.set_random_seed(0)
    model = build_model(spec, TASKS)
    pixels, severity = _pixels(2, seed=3), TASKS[0]
    normalise_batchnorm(model, _pixels(8, seed=4))
    core = model.backbone.core
    features = keras.Model(core.input, core.get_layer(LAST_CONV).output)
    kernel = model.heads["severity"].scores.kernel.numpy()
    predicted = np.argmax(model.predict_on_batch(pixels)["severity"], axis=-1)
    unit = pixels / 127.5 - 1
    half = unit.reshape(2, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    fine, coarse = features(unit).numpy(), features(half).numpy()  # (2, 2, 2, k), (2, 1, 1, k)
    channels = fine.shape[-1]
    w = kernel.T[predicted]
    cam = np.maximum(np.einsum("nhwk,nk->nhw", fine, w[:, :channels]), 0)
    cam = cam + np.maximum(np.einsum("nhwk,nk->nhw", coarse, w[:, channels:]), 0)
    expected = cam / cam.max(axis=(1, 2), keepdims=True)
    heatmap = Explainer(model).heatmaps(pixels, [severity])["severity"]
    corners = heatmap[:, [0, -1]][:, :, [0, -1]]
    np.testing.assert_allclose(corners, expected, atol=1e-4)


def test_unknown_task_is_a_clear_error(mobilenet):
    with pytest.raises(CardamageError, match="no task"):
        Explainer(mobilenet).heatmaps(_pixels(1), [Task("colour", TaskKind.MULTILABEL, ("red",))])


def test_overlay_png_has_the_photo_size_and_the_colour_map_the_right_way_round():
    photo = np.full((40, 70, 3), 128, dtype=np.uint8)
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[:, :4] = 1.0  # hot on the left
    overlay = np.asarray(Image.open(io.BytesIO(overlay_png(photo, heatmap, alpha=1.0))))
    assert overlay.shape == (40, 70, 3)
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_allclose(overlay[20, 0], np.array(jet(1.0)[:3]) * 255, atol=1)
    np.testing.assert_allclose(overlay[20, -1], np.array(jet(0.0)[:3]) * 255, atol=1)
    blended = Image.open(io.BytesIO(overlay_png(photo, heatmap)))
    assert blended.size == (70, 40)


def _predictor(model: keras.Model) -> Predictor:
    return Predictor(ModelMeta(SPEC, TASKS, {}), KerasEngine(model))


def test_explain_image_returns_a_png_per_task_at_the_photo_size(mobilenet):
    photo = np.random.default_rng(2).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    predictor = _predictor(mobilenet)
    overlays = explain_image(predictor, photo)
    assert list(overlays) == [t.name for t in TASKS]
    for encoded in overlays.values():
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).size == (80, 48)
    assert list(explain_image(predictor, photo, ["location"])) == ["location"]
    with pytest.raises(CardamageError, match="unknown task"):
        explain_image(predictor, photo, ["colour"])


def test_for_predictor_reuses_a_keras_model_and_loads_one_for_other_engines(mobilenet, tmp_path):
    assert Explainer.for_predictor(_predictor(mobilenet)).model is mobilenet
    ModelBundle(mobilenet, SPEC, TASKS).save(tmp_path)
    onnx_like = SimpleNamespace(engine=SimpleNamespace(name="onnx"), model_dir=tmp_path)
    pixels = _pixels(2, seed=3)
    loaded = Explainer.for_predictor(onnx_like).heatmaps(pixels, TASKS)
    original = Explainer(mobilenet).heatmaps(pixels, TASKS)
    for name, heatmap in original.items():
        np.testing.assert_allclose(loaded[name], heatmap, atol=1e-6)
