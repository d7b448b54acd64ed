"""A terminal report on a manifest: what there is to learn from, before any training.

Rare labels, labels that always come together, one photo copied many times and rows that
were left out all change what a model can learn and what its metrics mean; each gets a
section here, so a user sees them in one read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from cardamage.data.leakage import Leak, leak_report
from cardamage.data.manifest import TEST, TRAIN, VAL, Manifest, Problem
from cardamage.tasks import Task

_NO_LABEL = "(none)"
#: A label held by fewer source photos (groups) than this is flagged: five folds validate on
#: fewer than two each, so its per-fold F1 is noise, and copies of a few photos teach little.
FEW_GROUPS = 10


def inspect_manifest(
    manifest: Manifest,
    tasks: Sequence[Task],
    problems: Sequence[Problem] = (),
    notes: Sequence[str] = (),
    leaks: Sequence[Leak] = (),
) -> str:
    """Counts, co-occurrence and imbalance per task, groups, unlabelled images, problems; with
    a split column also the labels per split and near-identical photos across splits."""
    sections = [
        "\n".join([_overview(manifest, tasks), *notes]),
        *(_task_section(manifest, task) for task in tasks),
    ]
    if manifest.splits is not None:
        sections += [_splits_section(manifest, tasks), leak_report(leaks)]
    sections += [_groups_section(manifest), _problems_section(problems)]
    return "\n\n".join(sections) + "\n"


def _splits_section(manifest: Manifest, tasks: Sequence[Task]) -> str:
    """Images per label in each split: a label a split lacks cannot be scored there."""
    names = [s for s in (TRAIN, VAL, TEST) if s in set(manifest.splits or ())]
    parts = {s: manifest.subset(manifest.rows_in(s)) for s in names}
    lines = ["splits: " + ", ".join(f"{s} {len(parts[s])}" for s in names)]
    for task in tasks:
        counts = {s: label_counts(parts[s], task) for s in names}
        rows = [[label, *(counts[s][label] for s in names)] for label in task.labels]
        lines += [f"{task.name} per split:", _table(["label", *names], rows)]
    return "\n".join(lines)


def label_counts(manifest: Manifest, task: Task) -> dict[str, int]:
    """Images per label, in the task's label order (zero counts included)."""
    counts = manifest.targets(task).sum(axis=0).astype(int)
    return dict(zip(task.labels, counts.tolist(), strict=True))


def label_groups(manifest: Manifest, task: Task) -> dict[str, int] | None:
    """Distinct groups (source photos) per label; None without a group column."""
    if manifest.groups is None:
        return None
    counts = _groups_per_column(manifest, manifest.targets(task))
    return dict(zip(task.labels, counts, strict=True))


def _groups_per_column(manifest: Manifest, y: np.ndarray) -> list[int]:
    """Distinct groups among the images each column of ``y`` marks."""
    groups = np.asarray(manifest.groups, dtype=object)
    return [len(set(groups[column])) for column in y.T.astype(bool)]


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
    groups = label_groups(manifest, task)
    y = manifest.targets(task)
    lines = [
        f"{task.name} ({task.kind}, {len(task.labels)} labels)",
        _counts_table(manifest, task, y, counts, groups),
        _imbalance_line(counts),
    ]
    if groups is not None:
        lines.extend(_few_groups_line(groups))
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


def _counts_table(
    manifest: Manifest,
    task: Task,
    y: np.ndarray,
    counts: dict[str, int],
    groups: dict[str, int] | None,
) -> str:
    """Images, share and (with a group column) source photos per label; for a multilabel task
    also the images with none of its labels."""
    n = max(len(manifest), 1)
    rows = [[label, count, f"{100 * count / n:.1f}%"] for label, count in counts.items()]
    if groups is not None:
        for row, label in zip(rows, task.labels, strict=True):
            row.append(groups[label])
    if not task.multiclass:
        unlabelled = ~y.any(axis=1)
        none = int(unlabelled.sum())
        rows.append([_NO_LABEL, none, f"{100 * none / n:.1f}%"])
        if groups is not None:
            rows[-1].extend(_groups_per_column(manifest, unlabelled[:, None]))
    header = ["label", "images", "share", *(["groups"] if groups is not None else [])]
    return _table(header, rows)


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


def _few_groups_line(groups: dict[str, int]) -> list[str]:
    few = [f"{label} {n}" for label, n in groups.items() if 0 < n < FEW_GROUPS]
    if not few:
        return []
    return [
        f"few source photos (groups, under {FEW_GROUPS}): {', '.join(few)}: per-fold scores "
        "of these labels are noise and a model sees too few photos to learn them"
    ]


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
