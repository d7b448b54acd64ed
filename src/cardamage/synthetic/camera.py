"""Camera effects at output size: reduction, blur, light, colour cast, sensor noise, JPEG.

They are applied after the damage is drawn and measured, from their own random stream, so a
photo's look varies without changing its labels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def finish(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """The render reduced to output size (box filter: cheap anti-aliasing), then a camera's
    blur, light and noise."""
    image = _blur(image.resize((size, size), Image.BOX), rng)
    pixels = _light(np.asarray(image, dtype=np.float32), rng)
    pixels += rng.uniform(0, 5) * rng.standard_normal(pixels.shape, dtype=np.float32)  # sensor
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Slight defocus in most photos, scaled with the image so every size looks alike."""
    if rng.random() < 0.6:
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9) * image.width / 224))
    return image


def _light(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uneven light (a gradient in a random direction), global brightness and a colour cast."""
    size = pixels.shape[0]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gradient = 1 + rng.uniform(0, 0.3) * (
        math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    )
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return pixels * gradient[..., None] * gain


def save_jpeg(image: Image.Image, path: Path, rng: np.random.Generator) -> None:
    """JPEG at a random quality: compression artefacts of every strength, as in real photos."""
    image.save(path, format="JPEG", quality=int(rng.integers(70, 96)))
