"""The labelled-image table: a user's CSV, validated in one pass.

Two formats are read, told apart by the header: the tidy one this project writes
(``image,<task names>[,group][,claim][,split]``) and the original project's
(``name,damage,location,damagetype`` with ``[a;b]`` lists and ``NULL`` placeholders). Every
problem is collected with its line, so a user fixes the whole file in one go instead of one
error per run.
"""

from __future__ import annotations

import csv
import difflib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cardamage.data.images import ImageError, check_image
from cardamage.errors import CardamageError
from cardamage.io import atomic_write_text
from cardamage.tasks import NULL_LABEL, Task

IMAGE_COLUMN = "image"
GROUP_COLUMN = "group"
#: Photos of one car (an insurance claim, an inspection): assessed together, kept in one fold.
CLAIM_COLUMN = "claim"
#: Which part of a data set a photo belongs to: ``train`` and ``val`` rows are trained on
#: (``val`` as a fixed validation set with ``--val-split``), ``test`` rows are only scored.
SPLIT_COLUMN = "split"
TRAIN, VAL, TEST = "train", "val", "test"
#: Names a split goes by in files and folders (Roboflow: ``valid``), lower case.
SPLIT_NAMES = {TRAIN: TRAIN, VAL: VAL, "valid": VAL, "validation": VAL, TEST: TEST}
#: The original project's names for columns this project names differently (others: task name).
ORIGINAL_ALIASES = {"image": "name", "severity": "damage", "damage_type": "damagetype"}
LABEL_SEPARATOR = ";"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located so the user can jump to it."""

    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class ManifestError(CardamageError):
    """A manifest with problems; ``problems`` holds them all, ``str()`` lists one per line."""

    def __init__(self, problems: Sequence[Problem], header: str | None = None) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        header = header or f"manifest has {n} problem{'' if n == 1 else 's'}:"
        super().__init__("\n".join([header, *map(str, self.problems)]))


@dataclass(frozen=True)
class Manifest:
    """Valid rows only, column-aligned: row i of every field describes the same image."""

    source: Path
    image_root: Path
    images: tuple[str, ...]
    labels: dict[str, tuple[tuple[str, ...], ...]]
    groups: tuple[str, ...] | None
    lines: tuple[int, ...]
    #: Each photo's claim ('' for a photo of no claim); None without a ``claim`` column.
    claims: tuple[str, ...] | None = None
    #: Each photo's split (TRAIN, VAL or TEST); None without a ``split`` column.
    splits: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def paths(self) -> list[Path]:
        """Absolute image paths (``image_root`` is stored resolved)."""
        return [self.image_root / image for image in self.images]

    def targets(self, task: Task) -> np.ndarray:
        return task.encode(self.labels[task.name])

    def subset(self, indices: Iterable[int]) -> Manifest:
        """The rows at ``indices`` (ints, e.g. a fold's index array), in that order."""
        idx = [int(i) for i in indices]
        return replace(
            self,
            images=_pick(self.images, idx),
            labels={name: _pick(rows, idx) for name, rows in self.labels.items()},
            groups=None if self.groups is None else _pick(self.groups, idx),
            lines=_pick(self.lines, idx),
            claims=None if self.claims is None else _pick(self.claims, idx),
            splits=None if self.splits is None else _pick(self.splits, idx),
        )

    def rows_in(self, *splits: str) -> np.ndarray:
        """Indices of the rows in any of ``splits``; every row when there is no split column
        and ``splits`` includes TRAIN (a manifest without splits is all training data)."""
        if self.splits is None:
            return np.arange(len(self) if TRAIN in splits else 0)
        return np.flatnonzero(np.isin(np.asarray(self.splits, dtype=object), list(splits)))


def _pick(values: tuple, idx: list[int]) -> tuple:
    return tuple(values[i] for i in idx)


def read_manifest(
    path: Path | str, image_root: Path | str, tasks: Sequence[Task], *, check_images: bool = True
) -> tuple[Manifest, list[Problem]]:
    """Every valid row in the Manifest, every problem in the list: one pass, all problems collected.

    A fatal problem (unreadable file, missing column, no usable rows) leaves the Manifest empty.
    """
    check = _Check(Path(path), Path(image_root).resolve(), tuple(tasks), check_images)
    rows = check.run()
    manifest = Manifest(
        source=check.path,
        image_root=check.root,
        images=tuple(row.image for row in rows),
        labels={t.name: tuple(row.labels[t.name] for row in rows) for t in tasks},
        groups=tuple(row.group for row in rows) if check.grouped else None,
        lines=tuple(row.line for row in rows),
        claims=tuple(row.claim for row in rows) if check.claimed else None,
        splits=tuple(row.split for row in rows) if check.split else None,
    )
    return manifest, check.problems


def load_manifest(
    path: Path | str,
    image_root: Path | str,
    tasks: Sequence[Task],
    *,
    skip_bad: bool = False,
    check_images: bool = True,
) -> tuple[Manifest, list[Problem]]:
    """Raise ManifestError listing all problems unless skip_bad (then return the valid rows and
    the problems). An empty manifest always raises: there is nothing to train on."""
    manifest, problems = read_manifest(path, image_root, tasks, check_images=check_images)
    if problems and (not skip_bad or len(manifest) == 0):
        raise ManifestError(problems)
    return manifest, problems


def write_manifest(manifest: Manifest, path: Path | str, tasks: Sequence[Task]) -> None:
    """The tidy format, labels in task order: what a run actually trained on, re-readable."""
    columns: dict[str, Sequence[str]] = {IMAGE_COLUMN: manifest.images}
    for task in tasks:
        columns[task.name] = [LABEL_SEPARATOR.join(row) for row in manifest.labels[task.name]]
    if manifest.groups is not None:
        columns[GROUP_COLUMN] = manifest.groups
    if manifest.claims is not None:
        columns[CLAIM_COLUMN] = manifest.claims
    if manifest.splits is not None:
        columns[SPLIT_COLUMN] = manifest.splits
    write_csv(path, list(columns), zip(*columns.values(), strict=True))


def write_problems(problems: Iterable[Problem], path: Path | str) -> None:
    """``file,line,message`` CSV: the rows ``--skip-bad`` left out, and why."""
    rows = ([str(p.file), "" if p.line is None else p.line, p.message] for p in problems)
    write_csv(path, ["file", "line", "message"], rows)


def write_csv(path: Path | str, header: list[str], rows: Iterable[Sequence]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def parse_labels(cell: str, task: Task) -> tuple[str, ...]:
    """Labels in a cell: ``[front; side]``, ``front;side``; ``[]``, empty and ``NULL`` mean none.

    Known labels come back in the task's label order; unknown ones (for the caller to report)
    follow in cell order.
    """
    text = cell.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    values = {v.strip(): None for v in text.split(LABEL_SEPARATOR)}
    values.pop("", None)
    values.pop(NULL_LABEL, None)
    return (*(label for label in task.labels if label in values), *task.unknown(values))


@dataclass(frozen=True)
class _Row:
    line: int
    image: str
    labels: dict[str, tuple[str, ...]]
    group: str | None
    claim: str
    split: str


@dataclass(frozen=True)
class _Columns:
    """Where each field sits in a row; ``tasks`` maps task name -> (index, column as written)."""

    width: int
    image: int
    tasks: dict[str, tuple[int, str]]
    group: int | None
    claim: int | None
    split: int | None


class _Check:
    """State of one pass over a manifest: problems are collected, never raised."""

    def __init__(self, path: Path, root: Path, tasks: tuple[Task, ...], check_images: bool):
        self.path, self.root, self.tasks, self.check_images = path, root, tasks, check_images
        self.problems: list[Problem] = []
        self.grouped = self.claimed = self.split = False
        self._seen: dict[Path, int] = {}  # resolved image path -> first line listing it

    def report(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def run(self) -> list[_Row]:
        text = self._text()
        if text is None:
            return []
        if not self.root.is_dir():
            self.report(None, f"image root {self.root} is not a directory")
            return []
        records = self._records(text)
        header = next(records, None)
        if header is None:
            self.report(None, "file is empty")
            return []
        columns = self._columns(*header)
        if columns is None:
            return []
        self.grouped = columns.group is not None
        self.claimed = columns.claim is not None
        self.split = columns.split is not None
        return self._rows(records, columns)

    def _rows(self, records: Iterator[tuple[int, list[str]]], columns: _Columns) -> list[_Row]:
        """The valid data rows; no valid row at all is a problem of its own."""
        rows, n_records = [], 0
        for line, cells in records:
            n_records += 1
            row = self._row(line, cells, columns)
            if row is not None:
                rows.append(row)
        if not rows:
            self.report(
                None,
                f"no usable rows: all {n_records} data rows have problems"
                if n_records
                else "no data rows below the header",
            )
        return rows

    def _text(self) -> str | None:
        try:
            data = self.path.read_bytes()
        except OSError as e:
            self.report(None, f"cannot read manifest: {e.strerror or e}")
            return None
        try:
            return data.decode("utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            self.report(line, f"not UTF-8 (byte 0x{data[e.start]:02x}); save the file as UTF-8")
            return None

    def _records(self, text: str) -> Iterator[tuple[int, list[str]]]:
        """(first line, cells) of each non-blank record; quoted newlines keep the numbering."""
        reader = csv.reader(io.StringIO(text, newline=""))
        end = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                self.report(end + 1, f"malformed CSV: {e}")
                end = reader.line_num
                continue
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in cells):
                yield start, cells

    def _columns(self, line: int, header: list[str]) -> _Columns | None:
        """Map fields to header positions; the original format is recognised by ``name``."""
        names = [cell.strip().lower() for cell in header]
        original = IMAGE_COLUMN not in names and ORIGINAL_ALIASES[IMAGE_COLUMN] in names
        aliases = ORIGINAL_ALIASES if original else {}
        fields = (IMAGE_COLUMN, *(t.name for t in self.tasks))
        wanted = {f: aliases.get(f, f).lower() for f in fields}
        missing = [c for c in wanted.values() if c not in names]
        if missing:
            self.report(
                line,
                f"missing column{'s' if len(missing) > 1 else ''} "
                f"{_quoted(missing)} (header has: {', '.join(filter(None, names))})",
            )
        optional = (GROUP_COLUMN, CLAIM_COLUMN, SPLIT_COLUMN)
        repeated = [c for c in (*wanted.values(), *optional) if names.count(c) > 1]
        if repeated:
            self.report(
                line,
                f"column{'s' if len(repeated) > 1 else ''} {_quoted(repeated)} "
                "appear more than once in the header",
            )
        if missing or repeated:
            return None
        index = {c: names.index(c) for c in wanted.values()}
        return _Columns(
            width=len(names),
            image=index[wanted[IMAGE_COLUMN]],
            tasks={t.name: (index[wanted[t.name]], wanted[t.name]) for t in self.tasks},
            group=names.index(GROUP_COLUMN) if GROUP_COLUMN in names else None,
            claim=names.index(CLAIM_COLUMN) if CLAIM_COLUMN in names else None,
            split=names.index(SPLIT_COLUMN) if SPLIT_COLUMN in names else None,
        )

    def _row(self, line: int, cells: list[str], columns: _Columns) -> _Row | None:
        """The row if it has no problem, else None (its problems reported)."""
        if len(cells) != columns.width:
            self.report(
                line, f"expected {columns.width} fields (as in the header), found {len(cells)}"
            )
            return None
        before = len(self.problems)
        image = self._image(line, cells[columns.image].strip())
        labels = {t.name: self._labels(line, t, *columns.tasks[t.name], cells) for t in self.tasks}
        group = None if columns.group is None else self._group(line, cells[columns.group].strip())
        claim = "" if columns.claim is None else cells[columns.claim].strip()
        split = TRAIN if columns.split is None else self._split(line, cells[columns.split])
        if image is None or len(self.problems) > before:
            return None
        return _Row(line, image, labels, group, claim, split)

    def _image(self, line: int, raw: str) -> str | None:
        """The path as stored (relative to the root), or None after reporting why not."""
        if not raw:
            self.report(line, "empty image path")
            return None
        try:
            full = (self.root / raw).resolve()  # an absolute `raw` replaces the root
        except (OSError, RuntimeError) as e:  # symlink loops
            self.report(line, f"cannot resolve image path '{raw}': {e}")
            return None
        if not full.is_relative_to(self.root):
            self.report(line, f"image path '{raw}' is outside the image root {self.root}")
            return None
        first = self._seen.setdefault(full, line)
        if first != line:
            self.report(line, f"duplicate image '{raw}' (already listed on line {first})")
            return None
        if not self._readable(line, raw, full):
            return None
        return str(full.relative_to(self.root)) if Path(raw).is_absolute() else raw

    def _readable(self, line: int, raw: str, full: Path) -> bool:
        if not full.is_file():
            what = "is a directory" if full.is_dir() else f"not found under {self.root}"
            self.report(line, f"image '{raw}' {what}")
            return False
        if self.check_images:
            try:
                check_image(full, name=raw)
            except ImageError as e:
                self.report(line, str(e))
                return False
        return True

    def _labels(
        self, line: int, task: Task, index: int, column: str, cells: list[str]
    ) -> tuple[str, ...]:
        values = parse_labels(cells[index], task)
        for label in task.unknown(values):
            self.report(line, _unknown_label(label, column, task))
        if task.multiclass and len(values) != 1:
            found = f"{len(values)} labels ({_quoted(values)})" if values else "no label"
            self.report(
                line,
                f"column '{column}' needs exactly one label, found {found} "
                f"(one of: {', '.join(task.labels)})",
            )
        return values

    def _group(self, line: int, group: str) -> str:
        if not group:
            self.report(
                line, f"empty '{GROUP_COLUMN}' cell (give every row a group, or drop the column)"
            )
        return group

    def _split(self, line: int, cell: str) -> str:
        split = SPLIT_NAMES.get(cell.strip().lower())
        if split is None:
            self.report(
                line,
                f"'{SPLIT_COLUMN}' is '{cell.strip()}', not one of {', '.join(SPLIT_NAMES)} "
                "(an empty cell is no split: give every row one, or drop the column)",
            )
        return split or ""


def _unknown_label(label: str, column: str, task: Task) -> str:
    message = f"unknown label '{label}' in column '{column}' (known: {', '.join(task.labels)})"
    close = difflib.get_close_matches(label, task.labels, n=1, cutoff=0.6)
    return f"{message}; did you mean '{close[0]}'?" if close else message


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)
