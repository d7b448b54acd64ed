"""Label review: the photos whose labels are probably wrong, best first, and a person's fixes.

Confident learning (the ``cleanlab`` library) compares each image's given label with its
out-of-fold prediction, calibrated by the per-class confusion it estimates, so a class the
model finds hard is not flagged wholesale. A photo and its augmented copies (one ``group``)
are one decision: their out-of-fold scores are averaged and they are reviewed as one row
(listing the first photo), so copies neither fill the list nor inflate the class counts
confident learning estimates from.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cardamage.data.manifest import (
    IMAGE_COLUMN,
    LABEL_SEPARATOR,
    Manifest,
    Problem,
    load_manifest,
    read_manifest,
    write_manifest,
)
from cardamage.errors import CardamageError
from cardamage.io import atomic_write_text
from cardamage.tasks import Task

#: Columns of label_issues.csv: photos whose label a review found doubtful, best first.
LABEL_ISSUE_COLUMNS = ("task", "rank", "image", "group", "given", "suggested", "quality")


@dataclass(frozen=True)
class Issue:
    task: str
    rank: int
    image: str  # the manifest path of the group's first photo
    group: str
    given: tuple[str, ...]
    suggested: tuple[str, ...]
    quality: float  # cleanlab's label quality in [0, 1]: low = probably wrong


@dataclass(frozen=True)
class _Units:
    """One row per (group, given label): members' indices and their mean out-of-fold scores."""

    first: list[int]
    groups: list[str]
    scores: np.ndarray


def _units(manifest: Manifest, task: Task, scores: np.ndarray) -> _Units:
    """Copies of one photo with the same label are one unit; copies labelled differently are
    separate decisions, so they stay separate."""
    groups = manifest.groups or manifest.images
    members: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault((group, manifest.labels[task.name][i]), []).append(i)
    indices = list(members.values())
    mean = np.stack([scores[idx].mean(axis=0) for idx in indices])
    return _Units([idx[0] for idx in indices], [key[0] for key in members], mean)


def task_issues(manifest: Manifest, task: Task, scores: np.ndarray) -> list[Issue]:
    """The units cleanlab flags for ``task``, lowest label quality first."""
    units = _units(manifest, task, scores)
    y = manifest.targets(task)[units.first]
    with warnings.catch_warnings():  # "too few examples in class": the list says it by being short
        warnings.simplefilter("ignore", UserWarning)
        if task.multiclass:
            flagged, quality, suggested = _multiclass(y, units.scores)
        else:
            flagged, quality, suggested = _multilabel(y, units.scores, np.asarray(task.thresholds))
    order = [i for i in np.argsort(quality, kind="stable") if flagged[i]]
    return [
        Issue(
            task.name,
            rank,
            manifest.images[units.first[i]],
            units.groups[i],
            manifest.labels[task.name][units.first[i]],
            tuple(label for label, on in zip(task.labels, suggested[i], strict=True) if on),
            float(quality[i]),
        )
        for rank, i in enumerate(order, start=1)
    ]


def _multiclass(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = y.argmax(axis=1)
    probs = probs / probs.sum(axis=1, keepdims=True)
    # as many as confident learning estimates are wrong, the least self-confident ones: more
    # flipped severities in the top k than pruning by noise rate (docs/benchmarks/label-review.md)
    flagged = find_label_issues(labels, probs, filter_by="low_self_confidence")
    quality = get_label_quality_scores(labels, probs)
    suggested = np.eye(probs.shape[1], dtype=bool)[probs.argmax(axis=1)]
    return flagged, quality, suggested


def _multilabel(
    y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    labels = [np.flatnonzero(row).tolist() for row in y]
    probs = np.clip(probs, 1e-6, 1 - 1e-6)
    flagged = find_label_issues(labels, probs)
    # softmin, not the default moving average: a wrong label set is mostly one wrong label,
    # which the worst per-label score shows and an average of all of them dilutes
    quality = get_label_quality_scores(labels, probs, aggregator_kwargs={"method": "softmin"})
    return flagged, quality, probs >= thresholds


def find_issues(
    manifest: Manifest, tasks: Sequence[Task], oof: dict[str, np.ndarray]
) -> list[Issue]:
    """Every task's issues, tasks in order, each ranked from 1."""
    return [issue for t in tasks for issue in task_issues(manifest, t, oof[t.name])]


def write_issues(path: Path, issues: Sequence[Issue]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_ISSUE_COLUMNS)
    for i in issues:
        given, suggested = LABEL_SEPARATOR.join(i.given), LABEL_SEPARATOR.join(i.suggested)
        writer.writerow([i.task, i.rank, i.image, i.group, given, suggested, f"{i.quality:.4f}"])
    atomic_write_text(path, buffer.getvalue())


def read_issues(path: Path) -> list[Issue]:
    """The issues a label_issues.csv lists; a missing column or a rank or quality that is not
    a number names the file and line."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in LABEL_ISSUE_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise CardamageError(f"{path}: no column {', '.join(missing)}")
    return [_issue(path, line, row) for line, row in enumerate(rows, start=2)]


def _issue(path: Path, line: int, row: dict[str, str]) -> Issue:
    try:
        rank, quality = int(row["rank"]), float(row["quality"])
    except ValueError:
        raise CardamageError(
            f"{path} line {line}: rank {row['rank']!r} or quality {row['quality']!r} "
            "is not a number"
        ) from None

    def labels(cell: str) -> tuple[str, ...]:
        return tuple(filter(None, cell.split(LABEL_SEPARATOR)))

    given, suggested = labels(row["given"]), labels(row["suggested"])
    return Issue(row["task"], rank, row["image"], row["group"], given, suggested, quality)


def issues_table(issues: Sequence[Issue], top: int) -> str:
    """The first ``top`` issues of each task as an aligned text table."""
    shown = [i for i in issues if i.rank <= top]
    rows = [
        [
            i.task,
            str(i.rank),
            f"{i.quality:.3f}",
            ";".join(i.given) or "(none)",
            ";".join(i.suggested) or "(none)",
            i.image,
        ]
        for i in shown
    ]
    header = ["task", "rank", "quality", "given", "suggested", "image"]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines) + f"\n{len(issues)} likely label issues in all"


def apply_corrections(
    corrections: Path, data: Path, image_root: Path, tasks: Sequence[Task], out: Path
) -> int:
    """Write ``out``: ``data`` with each corrected cell replaced; returns the rows changed.

    Both files are validated as manifests (the corrections with every task column optional and
    an empty cell meaning keep), so a typo is a one-line error naming its line, and nothing is
    written unless all of it is valid."""
    manifest, _ = load_manifest(data, image_root, tasks, check_images=False)
    fixes = _read_corrections(corrections, tasks, manifest)
    labels = {name: list(rows) for name, rows in manifest.labels.items()}
    row_of = {image: i for i, image in enumerate(manifest.images)}
    changed = set()
    for image, cells in fixes.items():
        for name, value in cells.items():
            if labels[name][row_of[image]] != value:
                labels[name][row_of[image]] = value
                changed.add(image)
    fixed = replace(manifest, labels={name: tuple(rows) for name, rows in labels.items()})
    write_manifest(fixed, out, tasks)
    return len(changed)


def _read_corrections(
    path: Path, tasks: Sequence[Task], manifest: Manifest
) -> dict[str, dict[str, tuple[str, ...]]]:
    """image -> {task: labels} for every non-empty cell, validated by the manifest reader on
    the corrected rows (its problems renamed to this file and its lines)."""
    header, records = _correction_records(path, tasks, manifest)
    row_of = {image: i for i, image in enumerate(manifest.images)}
    lines, corrected, merged = [], [], io.StringIO()
    writer = csv.writer(merged, lineterminator="\n")
    writer.writerow([IMAGE_COLUMN, *(t.name for t in tasks)])
    for line, cells in records:
        cell = dict(zip(header, cells, strict=True))
        row = row_of[cell[IMAGE_COLUMN].strip()]
        writer.writerow(
            [
                manifest.images[row],
                *(
                    cell.get(t.name, "").strip()
                    or LABEL_SEPARATOR.join(manifest.labels[t.name][row])
                    for t in tasks
                ),
            ]
        )
        lines.append(line)
        corrected.append([name for name in header[1:] if cell[name].strip()])
    checked = _validated(path, merged.getvalue(), lines, manifest.image_root, tasks)
    return {
        image: {name: checked.labels[name][i] for name in names}
        for i, (image, names) in enumerate(zip(checked.images, corrected, strict=True))
    }


def _correction_records(
    path: Path, tasks: Sequence[Task], manifest: Manifest
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (lower-cased) and the non-blank (line, cells) records; a column that is no
    task, a wrong field count or an image the data does not list is an error naming its line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CardamageError(f"cannot read corrections {path}: {e}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [c.strip().lower() for c in next(reader, [])]
    names = [t.name for t in tasks]
    if not header or header[0] != IMAGE_COLUMN:
        raise CardamageError(f"{path}:1: the first column must be '{IMAGE_COLUMN}'")
    for column in header[1:]:
        if column not in names or header.count(column) > 1:
            raise CardamageError(
                f"{path}:1: column '{column}' is not a task or repeated (tasks: {', '.join(names)})"
            )
    known, records = set(manifest.images), []
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise CardamageError(
                f"{path}:{line}: expected {len(header)} fields as in the header, found {len(cells)}"
            )
        if cells[0].strip() not in known:
            raise CardamageError(f"{path}:{line}: image '{cells[0].strip()}' is not in the data")
        records.append((line, cells))
    return header, records


def _validated(
    path: Path, text: str, lines: list[int], root: Path, tasks: Sequence[Task]
) -> Manifest:
    """The corrected rows read as a manifest; its first problem, at this file's line, raised."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / path.name
        merged.write_text(text, encoding="utf-8")
        checked, problems = read_manifest(merged, root, tasks, check_images=False)
    if problems:
        first = problems[0]
        line = None if first.line is None else lines[first.line - 2]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CardamageError(f"{Problem(path, line, first.message)}{more}")
    return checked
