"""Near-identical photos in different splits: a test score that a copy of a training photo
inflates. Found by the perceptual hash that groups copies for cross-validation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cardamage.data.groups import hash_images, near_pairs
from cardamage.data.manifest import Manifest, write_csv

#: Columns of the run's leakage.csv, one pair a row.
LEAK_COLUMNS = ("split", "image", "other_split", "other_image", "bits_apart")
_SHOWN = 10  # pairs a terminal report lists before saying how many more


@dataclass(frozen=True)
class Leak:
    """Two photos in different splits whose perceptual hashes are at most a few bits apart."""

    split: str
    image: str
    other_split: str
    other_image: str
    bits_apart: int

    def __str__(self) -> str:
        return (
            f"{self.split} {self.image} ~ {self.other_split} {self.other_image} "
            f"({self.bits_apart} bits apart)"
        )


def split_leaks(manifest: Manifest, hashes: Sequence[int | None] | None = None) -> list[Leak]:
    """Every near-identical pair across splits; none without a split column. ``hashes`` (one
    per row) spare reading the photos again when the caller has them."""
    if manifest.splits is None or len(set(manifest.splits)) < 2:
        return []
    if hashes is None:
        hashes = hash_images(manifest.paths())
    splits, images = manifest.splits, manifest.images
    return [
        Leak(splits[i], images[i], splits[j], images[j], bits)
        for i, j, bits in near_pairs(hashes)
        if splits[i] != splits[j]
    ]


def write_leaks(leaks: Sequence[Leak], path: Path) -> None:
    rows = (
        [leak.split, leak.image, leak.other_split, leak.other_image, leak.bits_apart]
        for leak in leaks
    )
    write_csv(path, list(LEAK_COLUMNS), rows)


def leak_report(leaks: Sequence[Leak], listed: Path | None = None) -> str:
    """A few lines: how many pairs between which splits, the first ones, where all are."""
    if not leaks:
        return "leakage: no near-identical photos across splits"
    between = Counter("/".join(sorted((leak.split, leak.other_split))) for leak in leaks)
    lines = [
        f"leakage: {len(leaks)} near-identical photo pair{'s' if len(leaks) > 1 else ''} "
        "across splits (" + ", ".join(f"{k} {n}" for k, n in sorted(between.items())) + "): "
        "a model that trained on one of a pair scores the other too well"
    ]
    lines.extend(f"  {leak}" for leak in leaks[:_SHOWN])
    if len(leaks) > _SHOWN:
        lines.append(f"  ... and {len(leaks) - _SHOWN} more")
    if listed is not None:
        lines.append(f"  all pairs: {listed}")
    return "\n".join(lines)
