"""Cross-validation splits that respect classes, label sets, groups of near-identical photos and
claims (photos of one car)."""

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
    grouped whenever the manifest has groups or claims (no group, no claim on both sides of a
    split)."""
    groups = fold_units(manifest)
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


def fold_units(manifest: Manifest) -> np.ndarray | None:
    """Each photo's fold-group: photos that share a group or a claim, directly or through each
    other, get one unit (a claim's photos and their copies never straddle a split); None when
    the manifest has neither column."""
    keys = [
        [f"group:{g}" for g in manifest.groups] if manifest.groups is not None else None,
        [f"claim:{c}" if c else "" for c in manifest.claims] if manifest.claims else None,
    ]
    columns = [column for column in keys if column is not None]
    if not columns:
        return None
    parent = list(range(len(manifest)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for column in columns:
        first: dict[str, int] = {}
        for i, key in enumerate(column):
            if key:
                parent[root(i)] = root(first.setdefault(key, i))
    return np.asarray([f"unit{root(i)}" for i in range(len(manifest))])


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
