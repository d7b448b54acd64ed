"""Fold invariants: every image validated once, stratified, groups never split."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cardamage.data.folds import fold_units, make_folds
from cardamage.data.manifest import Manifest
from cardamage.errors import CardamageError
from cardamage.tasks import default_tasks

SEVERITY = ("minor", "moderate", "severe", "whole")


def manifest(n: int, groups: list[str] | None = None, seed: int = 0) -> Manifest:
    rng = np.random.default_rng(seed)
    severity = [(SEVERITY[i],) for i in rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])]
    location = [tuple(sorted(set(rng.choice(["front", "rear", "side"], 2)))) for _ in range(n)]
    damage = [
        tuple(sorted(set(rng.choice(["dent", "glass", "paint", "wheel"], 2)))) for _ in range(n)
    ]
    return Manifest(
        source=Path("labels.csv"),
        image_root=Path("/photos"),
        images=tuple(f"{i}.jpg" for i in range(n)),
        labels={
            "severity": tuple(severity),
            "location": tuple(location),
            "damage_type": tuple(damage),
        },
        groups=tuple(groups) if groups is not None else None,
        lines=tuple(range(2, n + 2)),
    )


def check_partition(splits, n: int) -> None:
    validated = np.concatenate([val for _, val in splits])
    assert sorted(validated.tolist()) == list(range(n)), "every image validated exactly once"
    for train, val in splits:
        assert not set(train) & set(val)
        assert len(train) + len(val) == n


def test_stratified_on_severity() -> None:
    m = manifest(400)
    tasks = default_tasks()
    splits = make_folds(m, tasks, 5, seed=42)
    check_partition(splits, 400)
    y = m.targets(tasks[0]).argmax(axis=1)
    overall = np.bincount(y, minlength=4) / len(y)
    for _, val in splits:
        share = np.bincount(y[val], minlength=4) / len(val)
        assert np.abs(share - overall).max() < 0.03


def test_groups_never_on_both_sides() -> None:
    groups = [f"g{i // 3}" for i in range(300)]  # three augmented copies of each photo
    m = manifest(300, groups)
    splits = make_folds(m, default_tasks(), 5, seed=1)
    check_partition(splits, 300)
    g = np.array(groups)
    for train, val in splits:
        assert not set(g[train]) & set(g[val])


def test_multilabel_only_stratified_and_grouped() -> None:
    tasks = default_tasks()[1:]
    m = manifest(300)
    splits = make_folds(m, tasks, 4, seed=0)
    check_partition(splits, 300)
    y = m.targets(tasks[0])
    for _, val in splits:
        assert np.abs(y[val].mean(axis=0) - y.mean(axis=0)).max() < 0.07
    groups = [f"g{i // 2}" for i in range(300)]
    grouped = make_folds(manifest(300, groups), tasks, 4, seed=0)
    check_partition(grouped, 300)
    g = np.array(groups)
    for train, val in grouped:
        assert not set(g[train]) & set(g[val])


def test_folds_are_reproducible() -> None:
    a = make_folds(manifest(100), default_tasks(), 5, seed=7)
    b = make_folds(manifest(100), default_tasks(), 5, seed=7)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b, strict=True))


def test_class_smaller_than_folds_is_named() -> None:
    m = manifest(50)
    labels = dict(m.labels)
    labels["severity"] = (("whole",),) * 2 + (("minor",),) * 48
    m = Manifest(m.source, m.image_root, m.images, labels, None, m.lines)
    with pytest.raises(CardamageError, match="severity label 'whole' has 2 images, fewer than 5"):
        make_folds(m, default_tasks(), 5, seed=0)


def test_too_few_groups() -> None:
    with pytest.raises(CardamageError, match="5 folds need at least 5 groups"):
        make_folds(manifest(30, ["a", "b", "c"] * 10), default_tasks(), 5, seed=0)


def test_claims_kept_together_and_bridged_by_groups() -> None:
    claims = ["" if i % 10 == 9 else f"c{i // 4}" for i in range(300)]  # some photos of no claim
    groups = [f"g{i}" for i in range(300)]
    groups[3] = groups[4] = "copies"  # a copy of claim c0's photo in claim c1
    m = replace(manifest(300, groups), claims=tuple(claims))
    units = fold_units(m)
    assert units[0] == units[3] == units[4] == units[7]  # c0, the copy, c1 are one unit
    assert units[9] != units[19]  # photos of no claim stand alone
    splits = make_folds(m, default_tasks(), 5, seed=0)
    check_partition(splits, 300)
    for train, val in splits:
        assert not set(units[train]) & set(units[val])
        assert not {claims[i] for i in train} & {claims[i] for i in val} - {""}
