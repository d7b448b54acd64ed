"""Groups of copies of one photo, so that cross-validation never puts a photo on both sides.

Augmented exports hold several copies of each source photo; a model that saw one copy in
training recognises the others in validation, and every metric comes out inflated. Copies are
found three ways, strongest first: a group column the user gives (taken as is), Roboflow's
``<source>_jpg.rf.<hash>.jpg`` file names, and identical or near-identical pixels by perceptual
hash. Name and pixel evidence are merged with union-find, so a copy linked either way joins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from cardamage.data.images import ImageError, load_image

#: Bits two 64-bit perceptual hashes may differ in and still count as the same photo.
#: Re-encoding or resizing flips a few bits. On lensor-coco (1,820 photos) this also joins a few
#: studio shots of one model in one pose (2-6 bits apart): a coarser fold, never a leak. Past
#: about 8 bits, unrelated photos start to chain into large groups.
DEFAULT_MAX_DISTANCE = 6

_HASH_SIDE = 8  # 8x8 lowest DCT frequencies: 64 bits
_DCT_SIDE = 32  # pixels per side the image is shrunk to before the DCT
_RF_MARK = ".rf."
_EXPORT_SUFFIX = re.compile(r"(?:_(?:jpe?g|png))+$", re.IGNORECASE)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def find_groups(
    paths: Sequence[Path],
    names: Sequence[str],
    explicit: Sequence[str] | None = None,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    hashes: Sequence[int | None] | None = None,
) -> list[str]:
    """One group id per image: ``explicit`` when given, else merged name and pixel evidence.

    ``paths`` are read for pixels (unless their ``hashes`` are given); ``names`` (the
    manifest's image column) give Roboflow sources and readable ids: a group is named after its
    first image's source, or that image's name. Unreadable images are left to their name
    evidence; the manifest check reports them.
    """
    if len(paths) != len(names):
        raise ValueError(f"{len(paths)} paths but {len(names)} names")
    if not 0 <= max_distance < 64:
        raise ValueError(f"max_distance must be 0..63 bits, got {max_distance}")
    if explicit is not None:
        return list(explicit)
    keys = [roboflow_source(name) or name for name in names]
    links = _UnionFind(len(names))
    _link_equal(links, keys)
    _link_similar(links, hash_images(paths) if hashes is None else hashes, max_distance)
    return [keys[links.find(i)] for i in range(len(names))]


def roboflow_source(name: str) -> str | None:
    """The source photo of a Roboflow export file, or None for another name.

    ``train/0003_JPEG_jpg.rf.3ce3.jpg`` -> ``0003``: the folder is dropped (one photo may sit in
    several splits) and the ``_jpg``/``_jpeg``/``_png`` suffixes Roboflow appends are removed.
    """
    base = Path(name).name
    if _RF_MARK not in base:
        return None
    source = base.split(_RF_MARK, 1)[0]
    return _EXPORT_SUFFIX.sub("", source) or source


def hash_images(paths: Sequence[Path]) -> list[int | None]:
    """64-bit perceptual hashes (None where an image cannot be read), decoded in threads:
    Pillow releases the GIL while decoding, and JPEGs decode at 1/8 scale."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_hash_or_none, paths, chunksize=16))


def near_pairs(
    hashes: Sequence[int | None], max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, bits apart)`` with i < j of images whose hashes differ in at most
    ``max_distance`` bits (the pairs ``find_groups`` joins on pixels), sorted."""
    members: dict[int, list[int]] = {}
    for i, value in enumerate(hashes):
        if value is not None:
            members.setdefault(value, []).append(i)
    unique = np.fromiter(members, dtype=np.uint64, count=len(members))
    images = list(members.values())
    pairs = {(i, j, 0) for same in images for k, i in enumerate(same) for j in same[k + 1 :]}
    for a, b in _near_pairs(unique, max_distance):  # a pair sharing several bands comes again
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            bits = int(np.bitwise_count(unique[x] ^ unique[y]))
            pairs.update((min(i, j), max(i, j), bits) for i in images[x] for j in images[y])
    return sorted(pairs)


def _hash_or_none(path: Path) -> int | None:
    try:
        return perceptual_hash(path)
    except (ImageError, OSError):
        return None


def perceptual_hash(path: Path) -> int:
    """pHash: signs of the 8x8 lowest 2-D DCT frequencies of a 32x32 grey thumbnail against
    their median. Low frequencies survive re-encoding, resizing and mild colour shifts."""
    rgb = load_image(path, size=_DCT_SIDE).astype(np.float32)
    dct = _DCT @ (rgb @ _LUMA) @ _DCT.T
    low = dct[:_HASH_SIDE, :_HASH_SIDE].ravel()
    return int(np.packbits(low > np.median(low)).view(">u8")[0])


def _dct_matrix(n: int) -> np.ndarray:
    """Rows are the DCT-II basis vectors (unscaled: only signs against the median matter)."""
    k = np.arange(n, dtype=np.float32)
    return np.cos(np.pi * np.outer(k, 2 * k + 1) / (2 * n)).astype(np.float32)


_DCT = _dct_matrix(_DCT_SIDE)


class _UnionFind:
    """Disjoint sets over 0..n-1; the root of a set is its smallest member (its first image)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _link_equal(links: _UnionFind, values: Sequence[Hashable | None]) -> dict[Hashable, int]:
    """Join every item to the first item with the same value (None joins nothing); return
    each value's first item."""
    first: dict[Hashable, int] = {}
    for i, value in enumerate(values):
        if value is not None:
            links.union(first.setdefault(value, i), i)
    return first


def _link_similar(links: _UnionFind, hashes: Sequence[int | None], max_distance: int) -> None:
    """Join images whose hashes differ in at most ``max_distance`` bits; equal hashes are
    joined first, so the pair search runs over distinct hashes only."""
    first = _link_equal(links, hashes)
    unique = np.fromiter(first, dtype=np.uint64, count=len(first))
    images = list(first.values())
    for a, b in _near_pairs(unique, max_distance):
        for i, j in zip(a.tolist(), b.tolist(), strict=True):
            links.union(images[i], images[j])


def _near_pairs(hashes: np.ndarray, max_distance: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs of hashes at most ``max_distance`` bits apart, in batches.

    Exact and near-linear (multi-index hashing): split the 64 bits into ``max_distance + 1``
    bands; two hashes that close agree on at least one whole band (pigeonhole), so only hashes
    sharing a band value are compared, bucket by bucket, with a vectorised popcount.
    """
    for bits in np.array_split(np.arange(64, dtype=np.uint64), max_distance + 1):
        mask = np.uint64((1 << len(bits)) - 1)
        keys = (hashes >> bits[0]) & mask
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(keys[order]) != 0])
        sizes = np.diff(np.r_[starts, len(order)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            bucket = order[start : start + size]
            close = np.bitwise_count(hashes[bucket, None] ^ hashes[None, bucket]) <= max_distance
            a, b = np.nonzero(np.triu(close, 1))
            yield bucket[a], bucket[b]
