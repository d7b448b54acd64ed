"""Class folders, as most downloaded data sets come: ``DIR/<class>/*.jpg``, or split first,
``DIR/train/<class>/*.jpg`` beside ``val`` (``valid``, ``validation``) and ``test``.

The folders give one task, its labels the class folder names, so no labels file or config is
needed; one configured task still wins (its labels checked against the folders). Layout
mistakes (an empty class folder, photos loose beside class folders, a split with no class
folders, a test class training never sees) are collected and raised together, each naming its
path; unreadable photos are problems a run may leave out (``--skip-bad``), as a manifest's are.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cardamage.data.groups import find_groups, hash_images
from cardamage.data.images import ImageError, check_image
from cardamage.data.manifest import SPLIT_NAMES, TEST, TRAIN, VAL, Manifest, Problem
from cardamage.errors import CardamageError
from cardamage.tasks import Task, TaskKind, default_tasks

#: File suffixes taken as photos; anything else in a class folder is skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: split -> class -> photos, relative to the root
Classes = dict[str, dict[str, list[Path]]]
#: The task a folder's classes make when no name is given.
DEFAULT_TASK = "label"
_SPLIT_ORDER = (TRAIN, VAL, TEST)
_LISTED = 3  # loose photos named in an error before "and N more"


@dataclass(frozen=True)
class FolderData:
    """What the folders hold: rows in split, class and path order."""

    manifest: Manifest
    task: Task
    #: Unreadable photos: left out of ``manifest``.
    problems: tuple[Problem, ...]
    #: Remarks for the user, e.g. labels of a default task that no folder has.
    notes: tuple[str, ...]
    #: Each row's perceptual hash (None where unreadable), for leakage across splits.
    hashes: tuple[int | None, ...]


def is_folder_data(path: Path) -> bool:
    return Path(path).is_dir()


def read_folders(
    root: Path,
    task_name: str | None = None,
    configured: Sequence[Task] | None = None,
    *,
    fixed_val: bool = False,
) -> FolderData:
    """Read a folder of class folders (split or not); raise listing every layout mistake.

    ``configured``: the tasks a config names (None: none named, the task is inferred);
    ``fixed_val``: ``val`` is a fixed validation set, so its classes must be in ``train``.
    """
    root = Path(root)
    if not root.is_dir():
        raise CardamageError(f"{root} is not a directory")
    layout = _Layout(root.resolve())
    classes = layout.read()
    trained = (TRAIN,) if fixed_val else (TRAIN, VAL)
    known = sorted({c for split in trained for c in classes.get(split, {})})
    layout.check_unseen(classes, known, fixed_val)
    task, notes = resolve_task(root, known, task_name, configured)
    layout.check_labels(classes, task, known)
    layout.raise_mistakes()
    return _rows(layout.root, classes, task, notes)


def resolve_task(
    root: Path, classes: Sequence[str], name: str | None, configured: Sequence[Task] | None
) -> tuple[Task, tuple[str, ...]]:
    """The task the class folders label, and notes: a configured task (by ``name``, or the
    only one); else a multiclass task ``name`` (default 'label') of the folder names, in a
    default task's label order when ``name`` is one (severity: minor before severe)."""
    if configured:
        return _configured(root, classes, name, configured)
    name = name or DEFAULT_TASK
    if len(classes) < 2:
        found = f"only '{classes[0]}'" if classes else "none"
        raise CardamageError(f"{root}: a classifier needs at least 2 class folders, found {found}")
    default = next((t for t in default_tasks() if t.name == name), None)
    if default is None:
        return Task(name, TaskKind.MULTICLASS, tuple(classes)), ()
    ordered = (
        *(c for c in default.labels if c in classes),
        *(c for c in classes if c not in default.labels),
    )
    return Task(name, TaskKind.MULTICLASS, ordered), _no_folder(default, classes)


def _configured(
    root: Path, classes: Sequence[str], name: str | None, configured: Sequence[Task]
) -> tuple[Task, tuple[str, ...]]:
    named = {t.name: t for t in configured}
    if name in named:
        task = named[name]
    elif len(configured) == 1 and name is None:
        task = configured[0]
    else:
        raise CardamageError(
            f"{root}: class folders label one task; "
            + (f"the config has no task '{name}'" if name else "the config lists several")
            + f" (tasks: {', '.join(named)}): name one with --task"
        )
    return task, _no_folder(task, classes)


def _no_folder(task: Task, classes: Sequence[str]) -> tuple[str, ...]:
    """A note naming the task's labels no class folder has, if any."""
    missing = [label for label in task.labels if label not in classes]
    if not missing:
        return ()
    return (f"{task.name} labels with no folder (not learned): {', '.join(missing)}",)


class _Layout:
    """One pass over the folders; mistakes collected, raised together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mistakes: list[str] = []
        self.folders: dict[tuple[str, str], Path] = {}  # (split, class) -> its folder

    def mistake(self, path: Path, message: str) -> None:
        self.mistakes.append(f"{path}: {message}")

    def raise_mistakes(self) -> None:
        if self.mistakes:
            n = len(self.mistakes)
            raise CardamageError(
                "\n  ".join(
                    [f"{self.root} has {n} layout problem{'s' if n > 1 else ''}:", *self.mistakes]
                )
            )

    def read(self) -> Classes:
        """split -> class -> photos (relative to the root); split TRAIN alone when the root
        holds class folders directly."""
        folders, loose = _entries(self.root)
        splits = {f: SPLIT_NAMES[f.name.lower()] for f in folders if f.name.lower() in SPLIT_NAMES}
        if not splits:
            return {TRAIN: self._classes(TRAIN, self.root, folders, loose)}
        others = [f.name for f in folders if f not in splits]
        if others:
            self.mistake(
                self.root,
                f"folder{'s' if len(others) > 1 else ''} {_quoted(others)} beside the split "
                f"folders {_quoted(f.name for f in splits)} (split folders are named "
                f"{', '.join(SPLIT_NAMES)}): move {'them' if len(others) > 1 else 'it'} into one",
            )
        if loose:
            self.mistake(self.root, f"photos beside the split folders, in none: {_listed(loose)}")
        found: Classes = {}
        for folder, split in sorted(splits.items(), key=lambda item: _SPLIT_ORDER.index(item[1])):
            if split in found:
                other = next(f for f, s in splits.items() if s == split and f != folder)
                self.mistake(folder, f"a second {split} split beside {other.name}: keep one")
                continue
            inner, inner_loose = _entries(folder)
            found[split] = self._classes(split, folder, inner, inner_loose)
        if TRAIN not in found:
            self.mistake(
                self.root, f"split folders {_quoted(f.name for f in splits)} but no 'train'"
            )
        return found

    def _classes(
        self, split: str, folder: Path, subfolders: list[Path], loose: list[Path]
    ) -> dict[str, list[Path]]:
        if not subfolders:
            self.mistake(folder, "no class folders (one folder of photos per class)")
            return {}
        if loose:
            self.mistake(
                folder, f"photos loose beside the class folders, in no class: {_listed(loose)}"
            )
        classes = {}
        for sub in subfolders:
            self.folders[split, sub.name] = sub
            photos = [sub / f for f in image_files(sub)]
            if not photos:
                self.mistake(
                    sub, f"empty class folder: no photos ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            classes[sub.name] = [p.relative_to(self.root) for p in photos]
        return classes

    def check_unseen(self, classes: Classes, known: list[str], fixed_val: bool) -> None:
        """A class to be scored (test, or a fixed val) must be one training learns."""
        for split in (VAL, TEST) if fixed_val else (TEST,):
            for name in classes.get(split, {}):
                if name not in known:
                    self.mistake(
                        self.folders[split, name],
                        f"class '{name}' is in {split} but not in train: the model cannot learn it",
                    )

    def check_labels(self, classes: Classes, task: Task, known: list[str]) -> None:
        """Every class folder must be a label of the task (a configured task's)."""
        for split, split_classes in classes.items():
            for name in split_classes:
                if name not in task.labels and name in known:  # else check_unseen said so
                    close = difflib.get_close_matches(name, task.labels, n=1, cutoff=0.6)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    self.mistake(
                        self.folders[split, name],
                        f"'{name}' is no {task.name} label "
                        f"(labels: {', '.join(task.labels)}){hint}",
                    )


def _rows(root: Path, classes: Classes, task: Task, notes: tuple[str, ...]) -> FolderData:
    """The readable photos as a manifest (a split column when the folders are split), grouped
    by perceptual hash within training (train and val) and within test."""
    items = [
        (name, label, photo)
        for name, split_classes in classes.items()
        for label in task.labels
        for photo in split_classes.get(label, [])
    ]
    problems, kept = [], []
    for item in items:
        try:
            check_image(root / item[2], name=item[2].as_posix())
        except ImageError as e:
            problems.append(Problem(root / item[2], None, str(e)))
            continue
        kept.append(item)
    paths = [root / photo for _, _, photo in kept]
    hashes = hash_images(paths)
    names = [photo.as_posix() for _, _, photo in kept]
    splits = tuple(name for name, _, _ in kept)
    manifest = Manifest(
        source=root,
        image_root=root,
        images=tuple(names),
        labels={task.name: tuple((label,) for _, label, _ in kept)},
        groups=tuple(_groups(paths, names, splits, hashes)),
        lines=tuple(range(1, len(kept) + 1)),
        splits=splits if len(classes) > 1 else None,
    )
    return FolderData(manifest, task, tuple(problems), notes, tuple(hashes))


def _groups(
    paths: list[Path], names: list[str], splits: Sequence[str], hashes: list[int | None]
) -> list[str]:
    """Copies grouped among the photos trained on and, apart, among the test photos: a test
    photo never changes how the training photos are grouped (and so folded)."""
    groups = [""] * len(names)
    for part in ((TRAIN, VAL), (TEST,)):
        rows = [i for i, s in enumerate(splits) if s in part]
        found = find_groups(
            [paths[i] for i in rows], [names[i] for i in rows], hashes=[hashes[i] for i in rows]
        )
        for i, group in zip(rows, found, strict=True):
            groups[i] = group
    return groups


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible subfolders and photos directly in ``folder``, sorted."""
    visible = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    folders = [p for p in visible if p.is_dir()]
    photos = [p for p in visible if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return folders, photos


def image_files(root: Path) -> list[Path]:
    """Photos anywhere under root, relative to it, sorted; hidden files and folders skipped."""
    files = (p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(f for f in files if not any(part.startswith(".") for part in f.parts))


def _listed(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_LISTED])
    return shown + (f" and {len(paths) - _LISTED} more" if len(paths) > _LISTED else "")


def _quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)
