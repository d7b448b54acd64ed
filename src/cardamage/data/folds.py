"""Cross-validation splits that respect classes, label sets and groups of near-identical photos."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from cardamage.data.manifest import Manifest
from cardamage.errors import CardamageError
from cardamage.tasks import Task

Split = tuple[np.ndarray, np.ndarray]


def make_folds(manifest: Manifest, tasks: Sequence[Task], k: int, seed: int) -> list[Split]:
    """Stratified on the first multiclass task, else multi-label iterative stratification;
    grouped whenever the manifest has groups (no group on both sides of a split)."""
    groups = np.asarray(manifest.groups) if manifest.groups is not None else None
    n_units = len(set(groups)) if groups is not None else len(manifest)
    if n_units < k:
        unit = "groups" if groups is not None else "images"
        raise CardamageError(
            f"{k} folds need at least {k} {unit}, the data has {n_units}: lower --folds"
        )
    multiclass = next((t for t in tasks if t.multiclass), None)
    if multiclass is not None:
        y = manifest.targets(multiclass).argmax(axis=1)
        _check_class_sizes(multiclass, y, groups, k)
        if groups is not None:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            return list(splitter.split(np.zeros(len(y)), y, groups))
        return list(
            StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
        )
    y = np.concatenate([manifest.targets(t) for t in tasks], axis=1)
    if groups is None:
        return list(
            MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y)
        )
    return _grouped_multilabel(y, groups, k, seed)


def _check_class_sizes(task: Task, y: np.ndarray, groups: np.ndarray | None, k: int) -> None:
    """A class with fewer members (or groups) than folds cannot appear in every validation split."""
    counts: Counter[int] = Counter()
    if groups is None:
        counts.update(y.tolist())
    else:
        counts.update(label for label, _ in {(int(c), g) for c, g in zip(y, groups, strict=True)})
    for index, label in enumerate(task.labels):
        if 0 < counts[index] < k:
            unit = "groups" if groups is not None else "images"
            raise CardamageError(
                f"{task.name} label '{label}' has {counts[index]} {unit}, fewer than {k} folds: "
                f"add examples, lower --folds, or remove the label"
            )


def _grouped_multilabel(y: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[Split]:
    """Stratify groups on the union of their members' labels, then expand back to images."""
    names, inverse = np.unique(groups, return_inverse=True)
    group_y = np.zeros((len(names), y.shape[1]), dtype=y.dtype)
    np.maximum.at(group_y, inverse, y)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    splits = []
    for train_groups, val_groups in splitter.split(group_y, group_y):
        splits.append(
            (
                np.flatnonzero(np.isin(inverse, train_groups)),
                np.flatnonzero(np.isin(inverse, val_groups)),
            )
        )
    return splits
