"""The feature cache: keyed by everything features depend on, reused, never half-written."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.config import AugmentConfig
from cardamage.data.pipeline import iter_image_batches
from cardamage.model.backbones import build_backbone
from cardamage.model.metadata import ModelSpec
from cardamage.train.features import FEATURES_FILE, FeatureRequest, cached_features

SPEC = ModelSpec("mobilenet", "none", 32, alpha=0.25)


@pytest.fixture
def request_(tmp_path: Path) -> FeatureRequest:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return FeatureRequest(SPEC, paths, AugmentConfig(), views=2, seed=1)


class CountingBackbone:
    """The real backbone, counting how often the cache had to run it."""

    def __init__(self) -> None:
        self.model = build_backbone("mobilenet", "none", 32, alpha=0.25)
        self.output_shape = self.model.output_shape
        self.calls = 0

    def predict_on_batch(self, batch):
        self.calls += 1
        return self.model.predict_on_batch(batch)


def test_view_zero_equals_an_uncached_forward_pass(request_: FeatureRequest, tmp_path: Path):
    backbone = CountingBackbone()
    features = cached_features(backbone, request_, tmp_path / "cache")
    assert features.shape == (2, 5, backbone.output_shape[-1])
    direct = np.concatenate(
        [backbone.model.predict_on_batch(b) for b in iter_image_batches(request_.paths, 32, 64)]
    )
    np.testing.assert_allclose(
        features[0], direct, rtol=1e-4, atol=0
    )  # random weights: tiny values
    assert not np.allclose(features[1], features[0], rtol=1e-2, atol=0)  # view 1 is augmented


def test_second_call_reuses_the_cache(request_: FeatureRequest, tmp_path: Path) -> None:
    backbone = CountingBackbone()
    first = np.array(cached_features(backbone, request_, tmp_path / "cache"))
    calls = backbone.calls
    second = cached_features(backbone, request_, tmp_path / "cache")
    assert backbone.calls == calls and calls > 0
    np.testing.assert_array_equal(first, second)
    assert not list((tmp_path / "cache").glob(".*")), "no temporary entry left"


def test_key_covers_everything_features_depend_on(request_: FeatureRequest) -> None:
    key = request_.key()
    assert key == replace(request_).key()
    changed = [
        replace(request_, spec=replace(SPEC, image_size=48)),
        replace(request_, spec=replace(SPEC, alpha=0.5)),
        replace(request_, spec=replace(SPEC, backbone="mobilenetv2")),
        replace(request_, augment=AugmentConfig(brightness=0.1)),
        replace(request_, views=3),
        replace(request_, seed=2),
        replace(request_, paths=request_.paths[:4]),
    ]
    assert len({key, *(r.key() for r in changed)}) == len(changed) + 1
    request_.paths[0].write_bytes(request_.paths[1].read_bytes())  # same name, new bytes
    assert request_.key() != key


def test_weights_file_content_is_part_of_the_key(request_: FeatureRequest, tmp_path: Path):
    weights = tmp_path / "w.weights.h5"
    build_backbone("mobilenet", "none", 32, alpha=0.25).core.save_weights(weights)
    with_file = replace(request_, spec=replace(SPEC, weights=str(weights)))
    key = with_file.key()
    build_backbone("mobilenet", "none", 32, alpha=0.25).core.save_weights(weights)
    assert with_file.key() != key


def test_an_interrupted_computation_leaves_no_entry(request_: FeatureRequest, tmp_path: Path):
    class Broken(CountingBackbone):
        def predict_on_batch(self, batch):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_features(Broken(), request_, tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob(FEATURES_FILE))
    assert not any((tmp_path / "cache").iterdir())
