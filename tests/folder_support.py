"""Small class-folder data sets on disk, as people download them: DIR[/split]/<class>/*.jpg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("minor", "moderate", "severe")


def make_tree(
    root: Path,
    splits: Mapping[str, int] | None = None,
    classes: Sequence[str] = CLASSES,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """``splits`` photos per class in each split folder (None: class folders directly in
    ``root``, 6 each); each class tinted its own colour over a random smooth pattern (what a
    perceptual hash sees), every photo distinct."""
    rng = np.random.default_rng(seed)
    for split, n in (splits or {"": 6}).items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                coarse = Image.fromarray(rng.integers(0, 200, (4, 4, 3), dtype=np.uint8))
                pixels = np.array(coarse.resize((size, size), Image.Resampling.BICUBIC))
                pixels[..., c % 3] = 230
                Image.fromarray(pixels).save(folder / f"{name}_{split or 'all'}_{i}.jpg")
    return root


def copy_photo(source: Path, target: Path) -> Path:
    """A re-encoded, slightly smaller copy: a near-identical photo, as exports make them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.resize((image.width - 4, image.height - 4)).save(target, quality=80)
    return target
