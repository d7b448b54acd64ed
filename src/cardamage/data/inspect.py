"""A terminal report on a manifest: what there is to learn from, before any training.

Rare labels, labels that always come together, one photo copied many times and rows that
were left out all change what a model can learn and what its metrics mean; each gets a
section here, so a user sees them in one read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from cardamage.data.manifest import Manifest, Problem
from cardamage.tasks import Task

_NO_LABEL = "(none)"


def inspect_manifest(
    manifest: Manifest, tasks: Sequence[Task], problems: Sequence[Problem] = ()
) -> str:
    """Counts, co-occurrence and imbalance per task, groups, unlabelled images, problems."""
    sections = [
        _overview(manifest, tasks),
        *(_task_section(manifest, task) for task in tasks),
        _groups_section(manifest),
        _problems_section(problems),
    ]
    return "\n\n".join(sections) + "\n"


def label_counts(manifest: Manifest, task: Task) -> dict[str, int]:
    """Images per label, in the task's label order (zero counts included)."""
    counts = manifest.targets(task).sum(axis=0).astype(int)
    return dict(zip(task.labels, counts.tolist(), strict=True))


def imbalance_ratio(counts: dict[str, int]) -> float | None:
    """Most over least frequent label among those present; None when no label has an image."""
    present = [c for c in counts.values() if c > 0]
    return max(present) / min(present) if present else None


def _overview(manifest: Manifest, tasks: Sequence[Task]) -> str:
    unlabelled = _unlabelled(manifest, tasks)
    return (
        f"{len(manifest)} images in {manifest.source} (under {manifest.image_root}); "
        f"{unlabelled} with no label in any task"
    )


def _unlabelled(manifest: Manifest, tasks: Sequence[Task]) -> int:
    any_label = np.zeros(len(manifest), dtype=bool)
    for task in tasks:
        any_label |= manifest.targets(task).any(axis=1)
    return int((~any_label).sum())


def _task_section(manifest: Manifest, task: Task) -> str:
    counts = label_counts(manifest, task)
    n = max(len(manifest), 1)
    rows = [[label, count, f"{100 * count / n:.1f}%"] for label, count in counts.items()]
    y = manifest.targets(task)
    if not task.multiclass:
        none = int((~y.any(axis=1)).sum())
        rows.append([_NO_LABEL, none, f"{100 * none / n:.1f}%"])
    lines = [
        f"{task.name} ({task.kind}, {len(task.labels)} labels)",
        _table(["label", "images", "share"], rows),
        _imbalance_line(counts),
    ]
    if not task.multiclass:
        lines.append(_labels_per_image(y))
        lines.append("co-occurrence (images with both labels):")
        matrix = (y.T @ y).astype(int)
        lines.append(
            _table(
                ["", *task.labels],
                [[label, *row] for label, row in zip(task.labels, matrix.tolist(), strict=True)],
            )
        )
    return "\n".join(lines)


def _imbalance_line(counts: dict[str, int]) -> str:
    ratio = imbalance_ratio(counts)
    absent = [label for label, count in counts.items() if count == 0]
    if ratio is None:
        return "imbalance: no label has any image"
    common = max(counts, key=counts.__getitem__)
    rare = min((label for label in counts if counts[label]), key=counts.__getitem__)
    line = f"imbalance: {ratio:.1f} ({common} {counts[common]} / {rare} {counts[rare]})"
    if absent:
        line += f"; no image at all (cannot be learned): {', '.join(absent)}"
    return line


def _labels_per_image(y: np.ndarray) -> str:
    sizes = Counter(y.sum(axis=1).astype(int).tolist())
    return "labels per image (labels: images): " + ", ".join(
        f"{k}: {sizes[k]}" for k in sorted(sizes)
    )


def _groups_section(manifest: Manifest) -> str:
    if manifest.groups is None:
        return (
            "groups: none (no group column): cross-validation may put copies of one photo "
            "on both sides; `cardamage data import` finds them"
        )
    sizes = Counter(manifest.groups)
    histogram = Counter(sizes.values())
    largest = max(sizes, key=sizes.__getitem__, default=None)
    lines = [
        f"groups: {len(sizes)} for {len(manifest)} images",
        "group sizes (images: groups): "
        + ", ".join(f"{size}: {histogram[size]}" for size in sorted(histogram)),
    ]
    if largest is not None:
        lines.append(f"largest: '{largest}' ({sizes[largest]} images)")
    return "\n".join(lines)


def _problems_section(problems: Sequence[Problem]) -> str:
    if not problems:
        return "problems: none"
    return "\n".join([f"problems: {len(problems)}", *(f"  {p}" for p in problems)])


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Indented columns: the first left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  "
        + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    )
