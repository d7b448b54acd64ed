"""Claim-level evaluation: the photos of each claim combined by the rule every entry point uses,
scored against the claim's truth.

The truth of a claim is the car's, from a claims file (``claim,<task columns>``, as
``cardamage synth --claims`` writes in claims.csv) when given, else what its photos' labels add
up to: the worst severity any photo has, the union of their locations and damage types.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cardamage.data.manifest import CLAIM_COLUMN, Manifest, parse_labels
from cardamage.errors import CardamageError
from cardamage.inference.claims import (
    DEFAULT_RULE,
    ClaimPhoto,
    ClaimTask,
    NoEvidence,
    assess_claim,
    levels,
)
from cardamage.inference.predictor import Prediction
from cardamage.metrics.classification import task_metrics
from cardamage.tasks import Task


def claim_members(manifest: Manifest) -> dict[str, list[int]]:
    """Claim id -> its photos' rows, in order of first appearance; a photo with an empty claim
    cell is a claim of its own, named by its path."""
    if manifest.claims is None:
        raise CardamageError(f"{manifest.source}: no '{CLAIM_COLUMN}' column")
    members: dict[str, list[int]] = {}
    for i, (image, claim) in enumerate(zip(manifest.images, manifest.claims, strict=True)):
        members.setdefault(claim or image, []).append(i)
    return members


def photo_truth(
    manifest: Manifest, tasks: Sequence[Task], members: dict[str, list[int]]
) -> dict[str, np.ndarray]:
    """Each claim's truth from its photos: the worst severity, the union of the labels."""
    truth = {}
    for task in tasks:
        y = manifest.targets(task)
        if task.multiclass:
            rank = np.argsort(levels(task))  # label index -> its level
            worst = [
                max(np.flatnonzero(y[rows].any(axis=0)), key=rank.__getitem__)
                for rows in members.values()
            ]
            truth[task.name] = np.eye(len(task.labels), dtype=int)[worst]
        else:
            truth[task.name] = np.stack([y[rows].max(axis=0) for rows in members.values()])
    return truth


def read_claim_truth(
    path: Path, tasks: Sequence[Task], claims: Sequence[str]
) -> dict[str, np.ndarray]:
    """The cars' labels from a claims file, for every claim of the manifest; a missing claim,
    a missing column or an unknown label is an error naming the file and line."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise CardamageError(f"cannot read claims file {path}: {e.strerror or e}") from None
    columns = [CLAIM_COLUMN, *(t.name for t in tasks)]
    missing = [c for c in columns if not rows or c not in rows[0]]
    if missing:
        raise CardamageError(f"{path}: no column {', '.join(missing)} (or no rows)")
    labels: dict[str, dict[str, tuple[str, ...]]] = {}
    for line, row in enumerate(rows, start=2):
        cells = {}
        for task in tasks:
            values = parse_labels(row[task.name], task)
            bad = task.unknown(values)
            if bad or (task.multiclass and len(values) != 1):
                raise CardamageError(
                    f"{path}:{line}: column '{task.name}': bad labels {row[task.name]!r}"
                )
            cells[task.name] = values
        labels[row[CLAIM_COLUMN].strip()] = cells
    absent = [c for c in claims if c not in labels]
    if absent:
        raise CardamageError(
            f"{path}: no row for claim {absent[0]!r} ({len(absent)} claims missing)"
        )
    return {t.name: t.encode([labels[c][t.name] for c in claims]) for t in tasks}


def decision_scores(task: ClaimTask) -> np.ndarray:
    """Scores whose decision (``metrics.decide``) is the claim's: multiclass, the decided label
    one-hot (the ordinal rule is not an argmax); multilabel, each label's best photo score."""
    labels = task.task.labels
    if task.task.multiclass:
        return np.eye(len(labels))[labels.index(task.labels[0])]
    return np.array([task.scores[label] for label in labels])


def claim_evaluation(
    manifest: Manifest,
    tasks: Sequence[Task],
    predictions: Sequence[Prediction],
    claim_labels: Path | None = None,
    rule: str = DEFAULT_RULE,
) -> dict:
    """Per-task metrics over claims, with how many claims and photos and where the truth came
    from. A claim whose photos all abstained has no decision: it is counted (``unassessed``)
    and left out of the metrics. ``review``: per task, how many decisions stand without review
    (``sure``) and their metrics."""
    members = claim_members(manifest)
    if claim_labels is None:
        truth = photo_truth(manifest, tasks, members)
    else:
        truth = read_claim_truth(claim_labels, tasks, list(members))
    scores: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    sure: dict[str, list[bool]] = {t.name: [] for t in tasks}
    assessed = []
    for k, (claim, rows) in enumerate(members.items()):
        photos = [ClaimPhoto(manifest.images[i], predictions[i]) for i in rows]
        try:
            assessment = assess_claim(claim, photos, rule)
        except NoEvidence:
            continue
        assessed.append(k)
        for task in tasks:
            decision = assessment.tasks[task.name]
            scores[task.name].append(decision_scores(decision))
            sure[task.name].append(decision.review is None or decision.review.sure)
    if not assessed:
        raise CardamageError("no claim could be assessed: every photo abstained")
    metrics, review = {}, {}
    for t in tasks:
        y, s, kept = truth[t.name][assessed], np.stack(scores[t.name]), np.array(sure[t.name])
        metrics[t.name] = task_metrics(t, y, s)
        review[t.name] = {"sure": int(kept.sum())}
        if kept.any():
            review[t.name]["without_review"] = task_metrics(t, y[kept], s[kept])
    return {
        "n_claims": len(members),
        "unassessed": len(members) - len(assessed),
        "n_photos": len(manifest),
        "rule": rule,
        "truth": str(claim_labels)
        if claim_labels
        else "the photos' labels (worst severity, union)",
        "tasks": metrics,
        "review": review,
    }
