"""The in-memory search over the index's entries, exact and cheap to build: hashes by Hamming
distance, features by cosine on a reduced copy of them (a fixed random orthogonal projection
to REDUCED dimensions: one numpy matmul per query, seconds per 100,000 photos to
build). The store re-checks the candidates on the full features, so its thresholds keep
their meaning; bench/reused_photos.py measured it against an HNSW graph (usearch), which
took minutes to build per process and found a random vector itself only 72 % of the time.

Rebuilt from the database when an index is opened and kept up to date with the rows other
processes add or delete (see ``SqlIndex._sync``): the database is the source of truth, this is
a cache of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from cardamage.inference.photo_index.fingerprint import hamming

#: Dimensions the features are projected to. A projection to d dimensions estimates a cosine
#: of 0.9 within about (1 - 0.9**2) / sqrt(d) (0.012 at 256): far inside MARGIN.
REDUCED = 256
#: Candidates whose reduced cosine is within this of the threshold are re-checked in full.
MARGIN = 0.1


@dataclass(frozen=True)
class Candidate:
    id: int
    bits: int  # Hamming distance of the hashes (the smaller of the photo's and its mirror's)


@cache
def projection(dim: int) -> np.ndarray:
    """(dim, REDUCED) orthonormal columns from a fixed seed (any process may draw its own: the
    database keeps the full features); the identity when the features are no wider. Drawn
    once per process (a QR decomposition: under a second)."""
    if dim <= REDUCED:
        return np.eye(dim, dtype=np.float32)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, REDUCED)))
    return q.astype(np.float32)


class VectorSearch:
    def __init__(self, dim: int) -> None:
        self.projection = projection(dim)
        self.size = 0  # rows in use: the arrays grow by doubling, so an append is cheap
        self.ids = np.empty(0, dtype=np.int64)
        self.hashes = np.empty(0, dtype=np.int64)
        self.reduced = np.empty((0, self.projection.shape[1]), dtype=np.float32)

    def __len__(self) -> int:
        return self.size

    def add(self, ids: np.ndarray, hashes: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        reduced = np.asarray(vectors, dtype=np.float32) @ self.projection
        reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
        self.ids = _append(self.ids, self.size, ids)
        self.hashes = _append(self.hashes, self.size, hashes)
        self.reduced = _append(self.reduced, self.size, reduced)
        self.size += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids[: self.size], ids)
        if not keep.all():
            self.ids, self.hashes, self.reduced = (
                a[: self.size][keep] for a in (self.ids, self.hashes, self.reduced)
            )
            self.size = len(self.ids)

    def search(
        self, phashes: list[int], vector: np.ndarray, max_bits: int, min_similarity: float, k: int
    ) -> list[Candidate]:
        """Entries whose hash is within ``max_bits`` of any of ``phashes``, and of the ``k``
        nearest by reduced features those within MARGIN of ``min_similarity``, each once."""
        n = self.size
        if not n:
            return []
        bits = np.min([hamming(h, self.hashes[:n]) for h in phashes], axis=0)
        query = np.asarray(vector, dtype=np.float32) @ self.projection
        similarities = self.reduced[:n] @ (query / max(float(np.linalg.norm(query)), 1e-12))
        top = np.argpartition(-similarities, k - 1)[:k] if n > k else np.arange(n)
        near = top[similarities[top] >= min_similarity - MARGIN]
        rows = np.union1d(np.flatnonzero(bits <= max_bits), near)
        return [Candidate(int(self.ids[r]), int(bits[r])) for r in rows]


def _append(array: np.ndarray, used: int, rows: np.ndarray) -> np.ndarray:
    """``rows`` written after the first ``used`` of ``array``, reallocated (doubled) when full."""
    if used + len(rows) > len(array):
        grown = np.empty((max(2 * len(array), used + len(rows)), *array.shape[1:]), array.dtype)
        grown[:used] = array[:used]
        array = grown
    array[used : used + len(rows)] = rows
    return array
