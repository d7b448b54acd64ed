"""The data set on disk: images and manifest, drawn in order here or by worker processes."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from cardamage.data.manifest import CLAIM_COLUMN, LABEL_SEPARATOR
from cardamage.io import atomic_path, atomic_write_text
from cardamage.synthetic.camera import save_jpeg
from cardamage.synthetic.claims import draw_claim
from cardamage.synthetic.labels import MANIFEST_HEADER, SynthFrequencies, SynthSample
from cardamage.synthetic.sample import draw_sample

T = TypeVar("T")
#: The cars' labels of a claims data set: one row per claim.
CLAIMS_HEADER = (CLAIM_COLUMN, *MANIFEST_HEADER[1:])


def _photo_row(name: str, sample: SynthSample) -> tuple[str, ...]:
    """A photo's manifest row (columns of MANIFEST_HEADER)."""
    return (
        name,
        sample.severity,
        LABEL_SEPARATOR.join(sample.location),
        LABEL_SEPARATOR.join(sample.damage_type),
    )


def _write_sample(
    out_dir: Path, name: str, i: int, seed: int, size: int, frequencies: SynthFrequencies | None
) -> tuple[str, ...]:
    """Draw sample i, write its JPEG, return its manifest row (columns of MANIFEST_HEADER)."""
    rng = np.random.default_rng([seed, i])
    sample = draw_sample(rng, size, frequencies)
    with atomic_path(out_dir / name) as tmp:
        save_jpeg(sample.image, tmp, rng)
    return _photo_row(name, sample)


def _write_claim(
    out_dir: Path, claim: str, i: int, seed: int, size: int, frequencies: SynthFrequencies | None
) -> tuple[list[tuple[str, ...]], tuple[str, ...]]:
    """Draw claim i, write its photos; return their manifest rows (with the claim) and the
    claim's row (columns of CLAIMS_HEADER)."""
    rng = np.random.default_rng([seed, i])
    sample = draw_claim(rng, size, frequencies)
    rows = []
    for k, photo in enumerate(sample.photos, start=1):
        name = f"images/{claim}_{k}.jpg"
        with atomic_path(out_dir / name) as tmp:
            save_jpeg(photo.image, tmp, rng)
        rows.append((*_photo_row(name, photo), claim))
    car = (
        claim,
        sample.severity,
        LABEL_SEPARATOR.join(sample.location),
        LABEL_SEPARATOR.join(sample.damage_type),
    )
    return rows, car


def generate_dataset(
    out_dir: Path,
    n: int = 1825,
    size: int = 224,
    seed: int = 0,
    frequencies: SynthFrequencies | None = None,
    progress: bool = False,
    workers: int = 1,
) -> Path:
    """Writes out_dir/images/<id>.jpg and out_dir/labels.csv, returns the manifest path.

    Sample i depends only on (seed, i, size, frequencies): a larger n adds images, never
    changes the others, and the number of worker processes changes nothing but the speed.
    Workers are spawned processes: a script that asks for more than one must guard its top
    level with ``if __name__ == "__main__":``.
    """
    out_dir = Path(out_dir)
    digits = max(5, len(str(n)))
    names = [f"images/{i + 1:0{digits}d}.jpg" for i in range(n)]
    draw = partial(_write_sample, out_dir, seed=seed, size=size, frequencies=frequencies)
    rows = list(
        tqdm(
            _drawn_rows(draw, names, min(workers, max(1, n // 64))),
            total=n,
            desc="synthetic images",
            unit="img",
            disable=not progress,
        )
    )
    return _write_manifest(out_dir / "labels.csv", rows)


def generate_claims(
    out_dir: Path,
    n: int = 300,
    size: int = 224,
    seed: int = 0,
    frequencies: SynthFrequencies | None = None,
    progress: bool = False,
    workers: int = 1,
) -> tuple[Path, Path]:
    """``n`` claims (2-6 photos of one car each): out_dir/images/<claim>_<k>.jpg, the photos'
    manifest out_dir/labels.csv (with a ``claim`` column: what ``cardamage assess`` and
    ``evaluate`` read) and the cars' labels out_dir/claims.csv; returns both paths. Claim i
    depends only on (seed, i, size, frequencies), as a photo does in ``generate_dataset``."""
    out_dir = Path(out_dir)
    digits = max(5, len(str(n)))
    claims = [f"c{i + 1:0{digits}d}" for i in range(n)]
    draw = partial(_write_claim, out_dir, seed=seed, size=size, frequencies=frequencies)
    drawn = list(
        tqdm(
            _drawn_rows(draw, claims, min(workers, max(1, n // 16))),
            total=n,
            desc="synthetic claims",
            unit="claim",
            disable=not progress,
        )
    )
    photos = [row for rows, _ in drawn for row in rows]
    manifest = _write_manifest(out_dir / "labels.csv", photos, (*MANIFEST_HEADER, CLAIM_COLUMN))
    cars = _write_manifest(out_dir / "claims.csv", [car for _, car in drawn], CLAIMS_HEADER)
    return manifest, cars


def _write_manifest(
    path: Path, rows: list[tuple[str, ...]], header: Sequence[str] = MANIFEST_HEADER
) -> Path:
    """The tidy manifest format :mod:`cardamage.data.manifest` reads, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def _drawn_rows(draw: Callable[[str, int], T], names: list[str], workers: int) -> Iterator[T]:
    """Drawn items (manifest rows) in order, drawn here or by ``workers`` processes."""
    if workers == 1:
        yield from map(draw, names, range(len(names)))
        return
    chunk = max(1, len(names) // (8 * workers))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(draw, names, range(len(names)), chunksize=chunk)
