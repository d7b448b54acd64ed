"""The data set on disk: images and manifest, drawn in order here or by worker processes."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cardamage.data.manifest import LABEL_SEPARATOR
from cardamage.data.synthetic.camera import save_jpeg
from cardamage.data.synthetic.labels import MANIFEST_HEADER, SynthFrequencies
from cardamage.data.synthetic.sample import draw_sample
from cardamage.io import atomic_path, atomic_write_text


def _write_sample(
    out_dir: Path, name: str, i: int, seed: int, size: int, frequencies: SynthFrequencies | None
) -> tuple[str, ...]:
    """Draw sample i, write its JPEG, return its manifest row (columns of MANIFEST_HEADER)."""
    rng = np.random.default_rng([seed, i])
    sample = draw_sample(rng, size, frequencies)
    with atomic_path(out_dir / name) as tmp:
        save_jpeg(sample.image, tmp, rng)
    return (
        name,
        sample.severity,
        LABEL_SEPARATOR.join(sample.location),
        LABEL_SEPARATOR.join(sample.damage_type),
    )


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


def _write_manifest(path: Path, rows: list[tuple[str, ...]]) -> Path:
    """The tidy manifest format :mod:`cardamage.data.manifest` reads, written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def _drawn_rows(
    draw: Callable[[str, int], tuple[str, ...]], names: list[str], workers: int
) -> Iterator[tuple[str, ...]]:
    """Manifest rows in order, drawn here or by ``workers`` processes."""
    if workers == 1:
        yield from map(draw, names, range(len(names)))
        return
    chunk = max(1, len(names) // (8 * workers))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(draw, names, range(len(names)), chunksize=chunk)
