"""The regression label review averages in is out of fold: it cannot have memorised a photo's
label, so a wrong label it disagrees with is evidence, not an echo."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from cardamage.tasks import Task, TaskKind, default_tasks
from cardamage.train.review_scores import linear_scores, mean_over_views, review_scores

SEVERITY, _, DAMAGE = default_tasks()


def _splits(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(KFold(5, shuffle=True, random_state=0).split(np.arange(n)))


def _one_hot(classes: np.ndarray, width: int) -> np.ndarray:
    return np.eye(width, dtype=np.float32)[classes]


def _views(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Photos' features and two slightly different views of each (what augmentation caches)."""
    photos = rng.normal(size=(n, dim))
    return photos, (photos + rng.normal(0, 0.1, size=(2, n, dim))).astype(np.float32)


def _accuracy(features: np.ndarray, classes: np.ndarray) -> float:
    targets = {"severity": _one_hot(classes, 4)}
    probs = linear_scores(features, targets, [SEVERITY], _splits(len(classes)), seed=0)
    return float(np.mean(probs["severity"].argmax(axis=1) == classes))


def test_random_labels_score_at_chance_and_learnable_ones_well() -> None:
    """More dimensions than photos: a fit that saw its own photos would score random labels
    perfectly; out of fold they stay at chance, while a real signal is found."""
    rng = np.random.default_rng(0)
    _, features = _views(rng, 200, 400)
    assert _accuracy(features, rng.integers(4, size=200)) < 0.45
    photos, features = _views(rng, 200, 20)
    assert _accuracy(features, np.argmax(photos[:, :4], axis=1)) > 0.8


def test_a_class_missing_from_a_fold_gets_zero_and_rows_stay_distributions() -> None:
    rng = np.random.default_rng(1)
    n = 50
    features = rng.normal(size=(1, n, 8)).astype(np.float32)
    classes = rng.integers(3, size=n)
    classes[0] = 3  # one photo of "whole": the folds that train without it cannot predict it
    splits = _splits(n)
    probs = linear_scores(features, {"severity": _one_hot(classes, 4)}, [SEVERITY], splits, 0)
    probs = probs["severity"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    without = next(val for _, val in splits if 0 in val)
    assert np.all(probs[without, 3] == 0)


def test_multilabel_with_a_constant_label_gives_probabilities_per_label() -> None:
    rng = np.random.default_rng(2)
    n = 60
    photos, features = _views(rng, n, 6)
    y = np.zeros((n, 4), dtype=np.float32)
    y[:, 0] = photos[:, 0] > 0  # learnable
    y[:, 1] = 1  # every photo: a constant the regression predicts as certain
    probs = linear_scores(features, {"damage_type": y}, [DAMAGE], _splits(n), 0)["damage_type"]
    assert probs.shape == (n, 4) and np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs[:, 1], 1.0)
    np.testing.assert_allclose(probs[:, 2], 0.0)
    assert np.mean((probs[:, 0] > 0.5) == y[:, 0]) > 0.8


def test_a_one_label_task_and_a_fold_of_one_class_still_score() -> None:
    rng = np.random.default_rng(3)
    n = 40
    photos, features = _views(rng, n, 5)
    damaged = Task("damaged", TaskKind.MULTILABEL, ("damaged",))
    targets = {
        "damaged": (photos[:, :1] > 0).astype(np.float32),
        "severity": _one_hot(np.zeros(n, dtype=int), 4),
    }  # every photo "minor": each fold's training has one class
    probs = linear_scores(features, targets, [damaged, SEVERITY], _splits(n), 0)
    assert probs["damaged"].shape == (n, 1)
    assert np.mean((probs["damaged"][:, 0] > 0.5) == targets["damaged"][:, 0]) > 0.8
    np.testing.assert_allclose(probs["severity"], targets["severity"])


def test_view_scores_are_the_validation_photos_scores_averaged_over_the_views() -> None:
    features = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)  # 2 views of 5 photos

    def first_feature(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"task": x[:, :1]}

    averaged = mean_over_views(first_feature, features, np.array([1, 3]))["task"][:, 0]
    np.testing.assert_allclose(averaged, [(3 + 18) / 2, (9 + 24) / 2])


def test_review_scores_average_the_two_models_or_keep_the_heads() -> None:
    heads = {"severity": np.array([[0.8, 0.2]])}
    linear = {"severity": np.array([[0.4, 0.6]])}
    np.testing.assert_allclose(review_scores(heads, linear)["severity"], [[0.6, 0.4]])
    assert review_scores(heads, None) is heads
