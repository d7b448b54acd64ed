"""Labelled photos from either source a user has: a manifest CSV or a folder of class folders.

One entry point for training and ``data inspect``, so both see the same rows, tasks, problems
and leakage across splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cardamage.data.folders import read_folders
from cardamage.data.leakage import Leak, split_leaks
from cardamage.data.manifest import Manifest, ManifestError, Problem, read_manifest
from cardamage.tasks import Task


@dataclass(frozen=True)
class LabelledData:
    """Every valid row (test ones included), the tasks they label and what was left out."""

    manifest: Manifest
    tasks: tuple[Task, ...]
    problems: tuple[Problem, ...]
    #: Remarks for the user (labels a folder set lacks).
    notes: tuple[str, ...]
    #: Near-identical photos in different splits.
    leaks: tuple[Leak, ...]
    #: Read from class folders (the tasks inferred from them) rather than a manifest.
    folders: bool


def read_labelled(
    data: Path,
    image_root: Path,
    tasks: Sequence[Task],
    *,
    task: str | None = None,
    configured: bool = True,
    fixed_val: bool = False,
) -> LabelledData:
    """``data`` a folder (class folders, split or not) or a manifest CSV; problems collected.

    For folders ``task`` names the task they label and ``configured`` says whether ``tasks``
    came from the user (else the task is inferred from the folder names); a manifest is read
    for ``tasks`` as they are.
    """
    if Path(data).is_dir():
        found = read_folders(data, task, tasks if configured else None, fixed_val=fixed_val)
        leaks = split_leaks(found.manifest, found.hashes)
        return LabelledData(
            found.manifest, (found.task,), found.problems, found.notes, tuple(leaks), True
        )
    manifest, problems = read_manifest(data, image_root, tasks)
    return LabelledData(
        manifest, tuple(tasks), tuple(problems), (), tuple(split_leaks(manifest)), False
    )


def load_labelled(
    data: Path,
    image_root: Path,
    tasks: Sequence[Task],
    *,
    skip_bad: bool = False,
    task: str | None = None,
    configured: bool = True,
    fixed_val: bool = False,
) -> LabelledData:
    """``read_labelled``, raising a ManifestError that lists every problem unless ``skip_bad``
    (then the problems are the rows left out); no usable row at all always raises."""
    found = read_labelled(
        data, image_root, tasks, task=task, configured=configured, fixed_val=fixed_val
    )
    if found.problems and (not skip_bad or len(found.manifest) == 0):
        n = len(found.problems)
        header = (
            f"{n} photo{'s' if n > 1 else ''} under {data} cannot be used "
            "(--skip-bad trains without them):"
        )
        raise ManifestError(found.problems, header if found.folders else None)
    return found
