"""Images that are not car photos, made offline: what the distribution check must flag."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Natural photos scikit-image ships inside its wheel (no download): people, a cat, a rocket,
#: coffee, microscopy, the sky, textures, a page of text. None shows a car.
SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field",
    "immunohistochemistry", "retina", "coins", "brick", "grass", "gravel", "moon", "page", "text",
)  # fmt: skip


def natural_photos() -> list[np.ndarray]:
    """scikit-image's photos as RGB uint8; empty without scikit-image (a dev dependency)."""
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in SKIMAGE_PHOTOS:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(image[..., :3].astype(np.uint8))
    return photos


def constructed(size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Random textures, flat colours, rendered text and scaled geometric shapes."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(6):  # textures: noise at several grain sizes
        grain = int(rng.integers(2, 32))
        small = rng.integers(0, 256, (grain, grain, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(small).resize((size, size), Image.NEAREST)))
    for _ in range(6):  # flat colours
        images.append(np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8))
    font = ImageFont.load_default()
    for _ in range(6):  # rendered text, like a receipt or a screenshot of a form
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(image)
        for line in range(0, size, 12):
            words = "".join(chr(int(c)) for c in rng.integers(65, 91, 14))
            draw.text((4, line), words, fill=(0, 0, 0), font=font)
        images.append(np.asarray(image))
    for _ in range(6):  # geometric shapes at several scales on a plain ground
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        scale = float(rng.uniform(0.1, 0.6))
        for _ in range(4):
            x, y = rng.integers(0, size, 2)
            r = int(scale * size / 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape(
                [int(x) - r, int(y) - r, int(x) + r, int(y) + r],
                fill=tuple(rng.integers(0, 256, 3).tolist()),
            )
        images.append(np.asarray(image))
    return images
