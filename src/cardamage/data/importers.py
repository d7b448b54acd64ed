"""Turn what users have into a tidy manifest: COCO exports, class folders, the original's CSV.

Every importer writes ``image,<task columns>,group`` (paths relative to the image root) that
``load_manifest`` reads as is, and returns an ``ImportReport``. Setup mistakes (unreadable or
malformed JSON, a mapping that names an unknown task or label, a box category the mapping
forgets) raise one-line ``CardamageError``s naming the file and field; problems with single
images (missing or unreadable files) leave those rows out and are listed in the report.
A source labels only some tasks (lensor-coco has no location): only those columns are written,
and the report says which, so the user trains with a config listing just them.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cardamage.data.folders import image_files
from cardamage.data.groups import find_groups
from cardamage.data.images import ImageError, check_image
from cardamage.data.inspect import label_counts
from cardamage.data.manifest import (
    GROUP_COLUMN,
    IMAGE_COLUMN,
    SPLIT_COLUMN,
    SPLIT_NAMES,
    Manifest,
    Problem,
    load_manifest,
    write_manifest,
)
from cardamage.errors import CardamageError
from cardamage.tasks import Task

#: Mapping key ``<task>_order``: a multiclass task's labels from mildest to worst.
ORDER_SUFFIX = "_order"
_COCO_PREFIX = "instances_"  # instances_train.json -> images under <root>/train/


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote, and what it left out and why."""

    out_csv: Path
    manifest: Manifest
    tasks: tuple[Task, ...]
    #: Configured tasks the source has no labels for: not written; train without them.
    missing_tasks: tuple[str, ...]
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.manifest)

    @property
    def groups(self) -> int:
        return len(set(self.manifest.groups or ()))

    def summary(self) -> str:
        """A few lines for the terminal; ``cardamage data inspect`` gives the full picture."""
        split = [SPLIT_COLUMN] if self.manifest.splits is not None else []
        columns = ", ".join([IMAGE_COLUMN, *(t.name for t in self.tasks), GROUP_COLUMN, *split])
        lines = [
            f"wrote {self.rows} images in {self.groups} groups to {self.out_csv} "
            f"({columns}); image paths are relative to {self.manifest.image_root}"
        ]
        if self.missing_tasks:
            lines.append(
                f"not in the source: {', '.join(self.missing_tasks)} "
                "(train with a config that lists only the tasks written)"
            )
        for task in self.tasks:
            counts = label_counts(self.manifest, task)
            lines.append(f"{task.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        lines.extend(self.notes)
        if self.problems:
            lines.append(f"{len(self.problems)} images left out:")
            lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


# --- COCO ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """Box categories -> image-level labels, as the user's mapping file says.

    ``{"categories": {"moderate-dent": {"severity": "moderate", "damage_type": "dent"}},
    "severity_order": ["minor", "moderate", "severe"], "no_boxes": {"severity": "whole"},
    "ignore": ["severity-damage"]}``: a multiclass task takes the worst label among the boxes
    (``<task>_order``, mildest first; default: the task's label order), a multilabel task the
    union; an image without boxes (ignored ones do not count) takes ``no_boxes``.
    """

    path: Path
    tasks: tuple[Task, ...]
    categories: dict[str, dict[str, tuple[str, ...]]]
    no_boxes: dict[str, tuple[str, ...]]
    ignore: frozenset[str] = frozenset()
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def unmapped(self, categories: set[str]) -> list[str]:
        return sorted(categories - self.categories.keys() - self.ignore)

    def image_labels(self, boxes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Labels per task, in task label order; a multiclass task may come back empty."""
        mapped = [self.categories[b] for b in boxes if b not in self.ignore] or [self.no_boxes]
        labels = {}
        for task in self.tasks:
            found = {label for m in mapped for label in m.get(task.name, ())}
            if task.multiclass and len(found) > 1:
                found = {max(found, key=self.orders[task.name].index)}
            labels[task.name] = tuple(label for label in task.labels if label in found)
        return labels


def read_mapping(path: Path, tasks: Sequence[Task]) -> Mapping:
    """Parse and check a mapping file against the configured tasks; raise on the first fault."""
    data = _read_json(path, "mapping")
    by_name = {t.name: t for t in tasks}
    order_keys = {f"{t.name}{ORDER_SUFFIX}": t for t in tasks if t.multiclass}
    allowed = ["categories", "no_boxes", "ignore", *order_keys]
    for key in _expect(data, dict, path, "the top level"):
        if key not in allowed:
            raise CardamageError(f"{path}: {_unknown('key', key, allowed)}")
    raw_categories = _member(data, "categories", dict, path, "")
    categories = {
        name: _task_labels(path, f"categories.{name}", value, by_name)
        for name, value in raw_categories.items()
    }
    no_boxes = _task_labels(path, "no_boxes", data.get("no_boxes", {}), by_name)
    ignore = _expect(data.get("ignore", []), list, path, "'ignore'")
    used = {name for labels in (*categories.values(), no_boxes) for name in labels}
    mapped = tuple(t for t in tasks if t.name in used)
    if not mapped:
        raise CardamageError(f"{path}: 'categories' gives no labels (tasks: {', '.join(by_name)})")
    orders = {
        t.name: _order(path, key, data.get(key), t, categories)
        for key, t in order_keys.items()
        if t.name in used
    }
    return Mapping(path, mapped, categories, no_boxes, frozenset(map(str, ignore)), orders)


def import_coco(
    annotations: Sequence[Path] | Path,
    images_root: Path,
    mapping: Path,
    out_csv: Path,
    tasks: Sequence[Task],
    keep_splits: bool = False,
) -> ImportReport:
    """COCO instances files (a Roboflow export's train/val/test included) -> tidy manifest.

    Each image's file is looked for at ``images_root/file_name``, then under a folder named
    for its split (``instances_train.json`` or ``train/_annotations.coco.json`` -> ``train/``).
    ``keep_splits`` writes that split (train, val or test) in a ``split`` column.
    """
    files = [annotations] if isinstance(annotations, Path) else list(annotations)
    rules = read_mapping(mapping, tasks)
    images = [image for path in files for image in _read_coco(path)]
    _check_mapped(rules, images)
    root = _image_root(images_root)
    rows: dict[Path, dict[str, tuple[str, ...]]] = {}
    splits = {path: _split_of(path) for path in files} if keep_splits else {}
    split_of: dict[Path, str] = {}  # kept image -> its annotation file's split
    problems = []
    for image in images:
        found = _locate(root, image)
        labels = rules.image_labels(image.boxes)
        problem = found if isinstance(found, str) else _no_label(rules.tasks, labels)
        if problem is None and found in rows:
            problem = f"its file {found} is listed twice; the first listing is kept"
        if problem is None:
            rows[found] = labels
            split_of[found] = splits.get(image.source, "")
        else:
            problems.append(Problem(image.source, None, f"image '{image.file_name}': {problem}"))
    manifest = _manifest(out_csv, root, rows, rules.tasks)
    if keep_splits:
        manifest = replace(manifest, splits=tuple(split_of[path] for path in rows))
    return _finish(manifest, out_csv, tasks, rules.tasks, problems, _coco_notes(rules, images))


def _split_of(annotations: Path) -> str:
    """The split an annotation file is of, by its name or folder (Roboflow: valid/)."""
    for hint in (annotations.stem.removeprefix(_COCO_PREFIX), annotations.parent.name):
        if hint.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[hint.lower()]
    raise CardamageError(
        f"{annotations}: no split in its name or folder ({', '.join(SPLIT_NAMES)}) "
        "for --keep-splits"
    )


@dataclass(frozen=True)
class _CocoImage:
    source: Path  # the annotation file that lists it
    file_name: str
    boxes: tuple[str, ...]  # category name of each box


def _read_coco(path: Path) -> list[_CocoImage]:
    """The images of one COCO file with their boxes' category names; raise if malformed."""
    data = _expect(_read_json(path, "COCO annotations"), dict, path, "the top level")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CardamageError(
                f"{path}: no '{key}' list at the top level (a COCO instances "
                "file has images, annotations and categories)"
            )
    names = _index(path, data, "categories", "name")
    files = _index(path, data, "images", "file_name")
    boxes = defaultdict(list)
    for i, box in enumerate(_expect(data["annotations"], list, path, "'annotations'")):
        where = f"annotations[{i}]"
        image_id = _member(box, "image_id", int, path, where)
        category_id = _member(box, "category_id", int, path, where)
        if image_id not in files:
            raise CardamageError(f"{path}: {where}.image_id {image_id} is no image's id")
        if category_id not in names:
            raise CardamageError(
                f"{path}: {where}.category_id {category_id} is no category's "
                f"id (ids: {', '.join(map(str, names))})"
            )
        boxes[image_id].append(names[category_id])
    return [_CocoImage(path, name, tuple(boxes[i])) for i, name in files.items()]


def _index(path: Path, data: dict, key: str, value: str) -> dict[int, str]:
    """``id -> value`` over the objects of list ``key`` (categories' names, images' files)."""
    index = {}
    for i, item in enumerate(_expect(data[key], list, path, f"'{key}'")):
        where = f"{key}[{i}]"
        item_id = _member(item, "id", int, path, where)
        if item_id in index:
            raise CardamageError(f"{path}: {where}.id {item_id} is used twice in '{key}'")
        index[item_id] = _member(item, value, str, path, where)
    return index


def _check_mapped(rules: Mapping, images: Sequence[_CocoImage]) -> None:
    used = {box: image.source for image in images for box in image.boxes}
    unmapped = rules.unmapped(set(used))
    if unmapped:
        where = ", ".join(sorted({str(used[c]) for c in unmapped}))
        raise CardamageError(
            f"{rules.path}: box categor{'y' if len(unmapped) == 1 else 'ies'} "
            f"{_quoted(unmapped)} (used in {where}) not in 'categories': map "
            f"{'it' if len(unmapped) == 1 else 'them'} or add to 'ignore'"
        )


def _locate(root: Path, image: _CocoImage) -> str | Path:
    """The image's path relative to ``root``, or why it cannot be used."""
    hints = dict.fromkeys(
        ["", image.source.stem.removeprefix(_COCO_PREFIX), image.source.parent.name]
    )
    candidates = [root / hint / image.file_name for hint in hints]
    full = next((c for c in candidates if c.is_file()), None)
    if full is None:
        return f"not found (looked for {', '.join(map(str, candidates))})"
    full = full.resolve()
    if not full.is_relative_to(root):
        return f"resolves to {full}, outside the image root {root}"
    relative = full.relative_to(root)
    return _unreadable(root, relative) or relative


def _no_label(tasks: Sequence[Task], labels: dict[str, tuple[str, ...]]) -> str | None:
    empty = [t.name for t in tasks if t.multiclass and not labels[t.name]]
    if not empty:
        return None
    return (
        f"no label for {_quoted(empty)} (its boxes give none; an image without boxes "
        "takes the mapping's 'no_boxes')"
    )


def _coco_notes(rules: Mapping, images: Sequence[_CocoImage]) -> tuple[str, ...]:
    bare = sum(all(b in rules.ignore for b in image.boxes) for image in images)
    ignored = Counter(b for image in images for b in image.boxes if b in rules.ignore)
    given = ", ".join(f"{task} {'+'.join(labels)}" for task, labels in rules.no_boxes.items())
    notes = [f"{bare} images without boxes took no_boxes: {given or 'no labels'}"]
    if ignored:
        notes.append("ignored boxes: " + ", ".join(f"{k} {v}" for k, v in ignored.items()))
    return tuple(notes)


def _task_labels(
    path: Path, where: str, value: Any, tasks: dict[str, Task]
) -> dict[str, tuple[str, ...]]:
    """``{task: label or [labels]}`` checked against the tasks' labels."""
    result = {}
    for name, raw in _expect(value, dict, path, f"'{where}'").items():
        if name not in tasks:
            raise CardamageError(f"{path}: {where}: {_unknown('task', name, list(tasks))}")
        task = tasks[name]
        labels = (raw,) if isinstance(raw, str) else tuple(_expect(raw, list, path, where))
        for label in labels:
            if label not in task.labels:
                raise CardamageError(
                    f"{path}: {where}.{name}: {_unknown('label', str(label), task.labels)}"
                )
        if task.multiclass and len(labels) != 1:
            raise CardamageError(
                f"{path}: {where}.{name}: multiclass task '{name}' takes one "
                f"label, found {len(labels)}"
            )
        result[name] = tuple(label for label in task.labels if label in labels)
    return result


def _order(
    path: Path, key: str, value: Any, task: Task, categories: dict[str, dict[str, tuple[str, ...]]]
) -> tuple[str, ...]:
    """Labels of a multiclass task from mildest to worst; each label a box can give ranked."""
    if value is None:
        return task.labels
    order = tuple(_expect(value, list, path, f"'{key}'"))
    for label in order:
        if label not in task.labels:
            raise CardamageError(f"{path}: {key}: {_unknown('label', str(label), task.labels)}")
    unranked = sorted(
        {label for m in categories.values() for label in m.get(task.name, ())} - set(order)
    )
    if unranked:
        raise CardamageError(f"{path}: {key} does not rank {_quoted(unranked)}")
    return order


# --- class folders and the original CSV ---------------------------------------------------


def import_folders(root: Path, task: str, out_csv: Path, tasks: Sequence[Task]) -> ImportReport:
    """ImageFolder layout -> tidy manifest for one task: ``root/<label>/**/<image>``.

    Every folder must be a label of ``task`` (multiclass, or multilabel with one label per
    image). Images directly in ``root`` have no label and are left out.
    """
    target = _task_named(task, tasks)
    root = _image_root(root)
    files = image_files(root)
    unknown = sorted({f.parts[0] for f in files if len(f.parts) > 1} - set(target.labels))
    if unknown:
        raise CardamageError(
            f"{root}: "
            + "; ".join(
                _unknown(f"{target.name} label (folder)", name, target.labels) for name in unknown
            )
        )
    rows: dict[Path, dict[str, tuple[str, ...]]] = {}
    problems = []
    for relative in files:
        loose = len(relative.parts) == 1
        problem = "not in a class folder: no label" if loose else _unreadable(root, relative)
        if problem is None:
            rows[relative] = {target.name: (relative.parts[0],)}
        else:
            problems.append(Problem(root / relative, None, problem))
    return _finish(_manifest(out_csv, root, rows, (target,)), out_csv, tasks, (target,), problems)


def import_original_csv(
    csv: Path, images_root: Path, out_csv: Path, tasks: Sequence[Task]
) -> ImportReport:
    """The original's CSV (or a tidy one) -> tidy manifest with groups; bad rows left out.

    A ``group`` column in the source is kept; otherwise groups are found from the images.
    """
    manifest, problems = load_manifest(csv, images_root, tasks, skip_bad=True)
    return _finish(manifest, out_csv, tasks, tuple(tasks), problems)


# --- shared -------------------------------------------------------------------------------


def _finish(
    manifest: Manifest,
    out_csv: Path,
    configured: Sequence[Task],
    written: Sequence[Task],
    problems: Sequence[Problem],
    notes: Sequence[str] = (),
) -> ImportReport:
    """Group, write atomically, report; an import with no usable image is an error."""
    if not len(manifest):
        first = f"; first problem: {problems[0]}" if problems else ""
        raise CardamageError(
            f"nothing to import: no usable image ({len(problems)} left out){first}"
        )
    groups = find_groups(manifest.paths(), manifest.images, manifest.groups)
    manifest = replace(manifest, groups=tuple(groups))
    write_manifest(manifest, out_csv, written)
    names = {t.name for t in written}
    missing = tuple(t.name for t in configured if t.name not in names)
    return ImportReport(out_csv, manifest, tuple(written), missing, tuple(problems), tuple(notes))


def _manifest(
    out_csv: Path, root: Path, rows: dict[Path, dict[str, tuple[str, ...]]], tasks: Sequence[Task]
) -> Manifest:
    """A manifest of importer rows: image path relative to root -> labels per task."""
    return Manifest(
        source=out_csv,
        image_root=root,
        images=tuple(path.as_posix() for path in rows),
        labels={t.name: tuple(labels[t.name] for labels in rows.values()) for t in tasks},
        groups=None,
        lines=tuple(range(2, len(rows) + 2)),
    )


def _unreadable(root: Path, relative: Path) -> str | None:
    """Why the image cannot be used (``load_manifest`` would refuse it), or None."""
    try:
        check_image(root / relative, name=relative.as_posix())
    except ImageError as e:
        return str(e)
    return None


def _image_root(path: Path) -> Path:
    root = path.resolve()
    if not root.is_dir():
        raise CardamageError(f"image root {path} is not a directory")
    return root


def _task_named(name: str, tasks: Sequence[Task]) -> Task:
    for task in tasks:
        if task.name == name:
            return task
    raise CardamageError(_unknown("task", name, [t.name for t in tasks]))


def _read_json(path: Path, what: str) -> Any:
    """Parsed JSON; unreadable files and syntax errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CardamageError(
            f"cannot read {what} file {path}: {getattr(e, 'strerror', None) or e}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CardamageError(
            f"{path}:{e.lineno}:{e.colno}: invalid JSON in {what} file: {e.msg}"
        ) from None


def _expect(value: Any, kind: type, path: Path, where: str) -> Any:
    """``value`` if it has the JSON type ``kind`` (a boolean is no integer here), else raise."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CardamageError(
            f"{path}: {where} should be a JSON {_JSON_NAMES[kind]}, found {_json_type(value)}"
        )
    return value


def _member(item: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """``item[key]``, of the JSON type ``kind``, from the object ``item`` at ``where`` (empty:
    the top level)."""
    if key not in _expect(item, dict, path, where or "the top level"):
        raise CardamageError(f"{path}: {where or 'the top level'} has no '{key}'")
    return _expect(item[key], kind, path, f"{where}.{key}" if where else f"'{key}'")


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "integer"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        dict: "an object",
        list: "an array",
        str: "a string",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


def _unknown(kind: str, value: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{value}' (known: {', '.join(known)}){hint}"


def _quoted(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)
