"""The in-memory search over the index's entries: hashes by Hamming distance (numpy, exact),
features by an HNSW graph (``usearch``, chosen by measurement in bench/reused_photos.py).

Rebuilt from the database when an index is opened and kept up to date with the rows other
processes add or delete (see ``SqlIndex.sync``): the database is the source of truth, this is
a cache of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from usearch.index import Index

from cardamage.inference.photo_index.fingerprint import hamming

#: Half precision: half the memory of float32 and the same neighbours at these similarities
#: (cosines are compared at two decimals).
VECTOR_DTYPE = "f16"


@dataclass(frozen=True)
class Candidate:
    id: int
    bits: int  # Hamming distance of the hashes (the smaller of the photo's and its mirror's)
    similarity: float  # cosine of the features


class VectorSearch:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.graph = Index(ndim=dim, metric="cos", dtype=VECTOR_DTYPE)
        self.ids = np.empty(0, dtype=np.int64)
        self.hashes = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: np.ndarray, hashes: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        self.graph.add(ids, np.asarray(vectors, dtype=np.float32), threads=0)
        self.ids = np.concatenate([self.ids, ids])
        self.hashes = np.concatenate([self.hashes, hashes])

    def remove(self, ids: np.ndarray) -> None:
        known = np.isin(ids, self.ids)
        if known.any():
            self.graph.remove(ids[known])
            keep = ~np.isin(self.ids, ids)
            self.ids, self.hashes = self.ids[keep], self.hashes[keep]

    def search(
        self, phashes: list[int], vector: np.ndarray, max_bits: int, min_similarity: float, k: int
    ) -> list[Candidate]:
        """Entries whose hash is within ``max_bits`` of any of ``phashes``, and the ``k``
        nearest by features at ``min_similarity`` or more, each once, most similar first."""
        if not len(self.ids):
            return []
        bits = np.min([hamming(h, self.hashes) for h in phashes], axis=0)
        close = self.ids[bits <= max_bits]
        found = self.graph.search(np.asarray(vector, dtype=np.float32), min(k, len(self.ids)))
        near = found.keys[1.0 - found.distances >= min_similarity].astype(np.int64)
        ids = np.unique(np.concatenate([close, near]))
        by_id = dict(zip(self.ids.tolist(), bits.tolist(), strict=True))
        stored = np.atleast_2d(self.graph.get(ids, dtype=np.float32)) if len(ids) else []
        similarities = [float(np.dot(v, vector) / max(np.linalg.norm(v), 1e-12)) for v in stored]
        out = [
            Candidate(int(i), by_id[int(i)], s)
            for i, s in zip(ids.tolist(), similarities, strict=True)
        ]
        return sorted(out, key=lambda c: (c.bits > max_bits, -c.similarity))
