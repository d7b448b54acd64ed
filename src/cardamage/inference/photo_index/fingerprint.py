"""What the index keeps of a photo: two fingerprints, never the photo.

- ``phash``: the 64-bit perceptual hash (``imagehash``: the DCT of a 32 x 32 grey thumbnail)
  of the photo as given, for copies: resized, recompressed or brightened copies land within a
  few bits. ``phash_mirror`` (the mirrored photo's hash) is only computed for queries: a
  mirrored copy is then a copy too.
- ``features``: the model's pooled backbone features (the ones the distribution check reads),
  L2-normalised, for near-copies the hash misses (cropped, colour-shifted). They are
  comparable only between photos seen by the same backbone weights: ``feature_space`` names
  those, and an index refuses features of another space.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import imagehash
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from cardamage.model.metadata import ModelMeta

#: The grey thumbnail pHash takes the DCT of (imagehash's default for 64-bit hashes).
THUMB = 32


@dataclass(frozen=True)
class Fingerprint:
    phash: int  # signed 64-bit (as databases store it)
    features: np.ndarray  # float32, unit length
    phash_mirror: int | None = None

    @classmethod
    def of(cls, pixels: np.ndarray, features: np.ndarray) -> Fingerprint:
        """From the photo's pixels (any size; the quality checks' square view is used) and its
        features as the engine gave them."""
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("L")
        # pHash's own first step, done once: the mirror's hash comes from the mirrored thumbnail
        thumb = image.resize((THUMB, THUMB), Image.Resampling.LANCZOS)
        mirror = thumb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return cls(_phash(thumb), unit(features), _phash(mirror))


def _phash(image: Image.Image) -> int:
    bits = imagehash.phash(image).hash.flatten()
    return int(np.packbits(bits).view(">i8")[0])


def unit(features: np.ndarray) -> np.ndarray:
    v = np.asarray(features, dtype=np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


def hamming(a: np.ndarray | int, b: np.ndarray) -> np.ndarray:
    """Bits that differ between 64-bit hashes (int64 arrays, or one int against an array)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64)).astype(np.int64)


def feature_space(meta: ModelMeta) -> str:
    """Names the backbone weights a model's features come from: its architecture and training
    record (a retrained model is another space); thresholds and engine do not change it."""
    described = {"spec": vars(meta.spec), "info": meta.info}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]
