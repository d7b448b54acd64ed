"""A backbone is an interface: a transformer is one registry entry and one class.

A tiny ViT-like backbone (patch embedding, one attention block, mean token pooling: no 2-D
pooling, no BatchNorm), defined and registered here only, trains through the head phase, predicts,
saves and loads, and Grad-CAM explains it on its token grid.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from cardamage.config import load_train_config
from cardamage.errors import CardamageError
from cardamage.inference.explain import Explainer
from cardamage.model.backbones import BACKBONES, Backbone, BackboneSpec, build_backbone
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import ModelBundle, build_model
from cardamage.tasks import default_tasks
from cardamage.train.trainer import FoldData, HeadTrainer

SIZE, PATCH, DIM = 32, 8, 16
GRID = SIZE // PATCH
TASKS = default_tasks()
#: what build_backbone passes that TinyViT has not, at the values that mean "none"
ABSENT = {"alpha": None, "mid_level": False, "scales": (1,), "weights": "none"}


@keras.saving.register_keras_serializable(package="cardamage_tests")
class TinyViT(Backbone):
    """Patches of 8 x 8 pixels -> tokens of 16 -> one pre-norm attention block -> their mean."""

    def __init__(self, architecture: str, image_size: int, **kwargs) -> None:
        if any(kwargs.pop(key, none) != none for key, none in ABSENT.items()):
            raise CardamageError("tinyvit has no alpha, mid level, scales or weights file")
        # === Layers ===
        self.preprocessing = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
        self.embed = keras.layers.Conv2D(DIM, PATCH, strides=PATCH, name="patch_embedding")
        self.tokens = keras.layers.Reshape((-1, DIM))
        self.grid = keras.layers.Reshape((image_size // PATCH, image_size // PATCH, DIM))
        self.norms = [keras.layers.LayerNormalization() for _ in range(2)]
        self.attention = keras.layers.MultiHeadAttention(2, DIM // 2)
        self.mlp = keras.layers.Dense(DIM, activation="gelu")
        self.pool = keras.layers.GlobalAveragePooling1D()
        # === Functional model ===
        pixels = keras.Input((image_size, image_size, 3), name="pixels")
        super().__init__(pixels, self.pool(self._encode(pixels)), **kwargs)
        self.architecture = architecture

    def _encode(self, pixels: keras.KerasTensor) -> keras.KerasTensor:
        x = self.tokens(self.embed(self.preprocessing(pixels)))
        normed = self.norms[0](x)
        x = x + self.attention(normed, normed)
        return x + self.mlp(self.norms[1](x))

    def feature_maps(self, pixels: keras.KerasTensor):
        """The tokens on their patch grid; the features are their mean over it."""
        grid = self.grid(self._encode(pixels))
        return [grid], self.pool(self.tokens(grid))

    def get_config(self) -> dict:
        return {"name": self.name, "architecture": self.architecture, "image_size": self.image_size}


@pytest.fixture(autouse=True)
def tinyvit(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = BackboneSpec("tinyvit", None, "builtin", description="test only", cls=TinyViT)
    monkeypatch.setitem(BACKBONES, "tinyvit", entry)


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def _targets(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        t.name: (
            np.eye(len(t.labels), dtype=np.float32)[rng.integers(0, len(t.labels), n)]
            if t.multiclass
            else rng.integers(0, 2, (n, len(t.labels))).astype(np.float32)
        )
        for t in TASKS
    }


def test_a_vit_trains_its_heads_predicts_saves_and_loads(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    spec = ModelSpec("tinyvit", "none", SIZE, head_units=8, standardize=True, mid_level=False)
    model = build_model(spec, TASKS)
    pixels, n = _pixels(24), 24
    features = model.backbone.predict(pixels, verbose=0)
    assert features.shape == (n, DIM) == (n, model.backbone.feature_dim)
    cfg = load_train_config(None, {"data": tmp_path / "l.csv", "out": tmp_path / "r", "epochs": 2})
    data = FoldData(features[None], _targets(n), [], np.arange(16), np.arange(16, n))
    before = [w.copy() for w in model.heads["severity"].scores.get_weights()]
    HeadTrainer(TASKS, cfg).fit(list(model.branch_heads), data, tmp_path / "logs")
    after = model.heads["severity"].scores.get_weights()
    assert not all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    scores = model.predict(pixels, verbose=0)
    on_features = model.branch_heads[0].predict(features, verbose=0)
    for t in TASKS:  # the classifier is its backbone and the trained heads, nothing else
        np.testing.assert_allclose(scores[t.name], on_features[t.name], atol=1e-5)
    ModelBundle(model, spec, TASKS).save(tmp_path / "model")
    loaded = ModelBundle.load(tmp_path / "model").model
    assert isinstance(loaded.backbone, TinyViT)
    for name, value in loaded.predict(pixels, verbose=0).items():
        np.testing.assert_allclose(value, scores[name], atol=1e-6)


def test_grad_cam_explains_a_vit_on_its_token_grid() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec("tinyvit", "none", SIZE, head_units=0, mid_level=False), TASKS)
    maps = Explainer(model).heatmaps(_pixels(2, seed=2), TASKS)
    for heatmap in maps.values():
        assert heatmap.shape == (2, SIZE, SIZE) and np.isfinite(heatmap).all()
        assert heatmap.min() >= 0.0 and np.allclose(heatmap.max(axis=(1, 2)), 1.0)
        assert not np.allclose(heatmap[0], heatmap[0, 0, 0])  # a map over the grid, not flat


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.split(), "has no top stage to tune: set tune_top false"),
        (lambda b: b.tunable_layers, "cannot be fine-tuned: set fine_tune_layers 0"),
    ],
)
def test_what_a_vit_does_not_have_is_refused_clearly(call, message: str) -> None:
    with pytest.raises(CardamageError, match=message):
        call(build_backbone("tinyvit", "none", SIZE))


def test_options_the_backbone_has_not_are_refused() -> None:
    with pytest.raises(CardamageError, match="tinyvit has no alpha, mid level"):
        build_backbone("tinyvit", "none", SIZE, mid_level=True)
