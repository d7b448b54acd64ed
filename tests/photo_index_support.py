"""Photos and their copies for the photo index tests: smooth made-up scenes (a perceptual hash
reads shapes, not noise) and the transforms a reused photo goes through."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from cardamage.inference.photo_index.check import open_index
from cardamage.inference.photo_index.fingerprint import Fingerprint
from cardamage.inference.photo_index.store import Entry

#: The feature space of made-up fingerprints.
SPACE = "test-space"


def scene(seed: int, size: int = 256) -> Image.Image:
    """A photo-like image: a smooth random colour field, a few bright and dark blobs, grain."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8))
    image = np.asarray(field.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(4):
        (cy, cx), r = rng.uniform(0.15, 0.85, 2) * size, rng.uniform(0.08, 0.2) * size
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        image += rng.choice([-1, 1]) * 90 * blob[..., None]
    image += rng.normal(0, 6, image.shape)  # grain: the photo passes the sharpness check
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def resized(image: Image.Image) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)


def jpeg60(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def mirrored(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def brighter(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.2)


COPIES = {"resized": resized, "jpeg60": jpeg60, "mirrored": mirrored, "brighter": brighter}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def read_only(path: Path) -> None:
    """The file cannot be written, even by root (the suite may run as root): immutable where
    the file system allows it, else without write bits."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    if shutil.which("chattr") is None:
        pytest.skip("root without chattr: cannot make a file read-only")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot make {path} immutable: {done.stderr.strip()}")


def writable(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the test cluster: each test its own index."""
    import psycopg

    name = f"index_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.replace("/postgres?", f"/{name}?")


def random_fingerprint(seed: int, dim: int = 16) -> Fingerprint:
    rng = np.random.default_rng(seed)
    return Fingerprint(int(rng.integers(-(2**63), 2**63 - 1)), rng.standard_normal(dim))


def write_claims(location: str, writer: int, claims: int) -> None:
    """A writer process: claims of three photos each, one transaction per claim (kept here,
    not in a test module, so a spawned process imports no model code)."""
    index = open_index(location, SPACE)
    for k in range(claims):
        claim = f"w{writer}-c{k}"
        prints = [random_fingerprint(writer * 10_000 + k * 10 + j) for j in range(3)]
        index.add([Entry(claim, f"{j}.jpg", p) for j, p in enumerate(prints)])
    index.close()


def write_forever(location: str) -> None:
    write_claims(location, 0, 10**9)
