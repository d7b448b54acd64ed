"""Calibration and the distribution check on constructed numbers: no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from cardamage.metrics.calibration import reliability
from cardamage.tasks import Task, TaskKind
from cardamage.trust.calibrators import calibrate, cross_fitted, fit_calibration
from cardamage.trust.distribution import DistributionCheck

SEVERITY = Task("severity", TaskKind.MULTICLASS, ("a", "b", "c"), (0.5,) * 3)
TYPES = Task("damage_type", TaskKind.MULTILABEL, ("x", "y"), (0.5, 0.5))


def _overconfident(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of logits 4x too large: right about 70 % of the time, sure about 99 %."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), truth] += 1.2
    scores = np.exp(4 * logits)
    return np.eye(3)[truth], scores / scores.sum(axis=1, keepdims=True)


def _splits(n: int, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    folds = np.array_split(np.random.default_rng(1).permutation(n), k)
    return [(np.concatenate(folds[:i] + folds[i + 1 :]), folds[i]) for i in range(k)]


def test_temperature_scaling_halves_the_ece_of_an_overconfident_model_and_keeps_its_ranking():
    y, scores = _overconfident()
    calibration = fit_calibration(SEVERITY, y, scores)
    assert calibration["method"] == "temperature" and calibration["temperature"] > 2
    after = cross_fitted(SEVERITY, y, scores, _splits(len(y)))
    before_ece = reliability(y, scores, multiclass=True)["ece"]
    after_ece = reliability(y, after, multiclass=True)["ece"]
    assert after_ece < before_ece / 2
    np.testing.assert_array_equal(after.argmax(axis=1), scores.argmax(axis=1))
    np.testing.assert_allclose(after.sum(axis=1), 1, atol=1e-5)


def test_platt_scaling_calibrates_each_label_on_its_own():
    rng = np.random.default_rng(2)
    n = 4000
    y = (rng.random((n, 2)) < [0.3, 0.6]).astype(float)
    # label x over-confident, label y under-confident
    z = np.where(y > 0, 1.0, -1.0) + rng.normal(0, 1.2, (n, 2))
    scores = 1 / (1 + np.exp(-np.array([4.0, 0.4]) * z))
    after = cross_fitted(TYPES, y, scores, _splits(n))
    for j in range(2):
        before_ece = reliability(y[:, j : j + 1], scores[:, j : j + 1], multiclass=False)["ece"]
        after_ece = reliability(y[:, j : j + 1], after[:, j : j + 1], multiclass=False)["ece"]
        assert after_ece < before_ece / 2
    calibration = fit_calibration(TYPES, y, scores)
    assert calibration["a"][0] < 1 < calibration["a"][1]


def test_a_label_never_seen_keeps_its_scores():
    y = np.zeros((50, 2))
    y[:25, 1] = 1
    scores = np.random.default_rng(3).random((50, 2))
    calibration = fit_calibration(TYPES, y, scores)
    assert (calibration["a"][0], calibration["b"][0]) == (1.0, 0.0)
    np.testing.assert_allclose(calibrate(calibration, scores)[:, 0], scores[:, 0], atol=1e-5)


def test_no_calibration_leaves_scores_alone():
    scores = np.random.default_rng(4).random((5, 3))
    assert calibrate(None, scores) is scores


@pytest.mark.parametrize("method", ["residual", "knn", "mahalanobis"])
def test_distribution_check_passes_the_chosen_share_of_genuine_features_and_flags_others(method):
    rng = np.random.default_rng(5)
    basis = rng.normal(0, 1, (8, 64))
    genuine = rng.normal(0, 1, (1200, 8)) @ basis + rng.normal(0, 0.3, (1200, 64))
    check = DistributionCheck.fit(genuine[:1000], _splits(1000), method, coverage=0.9)
    unseen = [v.passed for v in check.verdicts(genuine[1000:])]
    assert abs(np.mean(unseen) - 0.9) < 0.06
    strangers = rng.normal(0, 1, (200, 64)) * 3
    assert np.mean([v.passed for v in check.verdicts(strangers)]) < 0.05


def test_the_residual_check_passes_another_camera_and_flags_another_subject():
    """Another camera or light moves a photo's features along the directions car photos vary
    along anyway (here: the same components, spread twice as wide and shifted); another
    subject leaves them. Fewer photos than feature dimensions: nothing to invert."""
    rng = np.random.default_rng(7)
    d, n = 400, 300
    basis = rng.normal(0, 1, (6, d))

    def photos(count: int, basis: np.ndarray, spread: float = 1.0, shift: float = 0.0):
        coefficients = rng.normal(shift, spread, (count, len(basis)))
        return coefficients @ basis + rng.normal(0, 0.3, (count, d))

    check = DistributionCheck.fit(photos(n, basis), _splits(n), "residual", coverage=0.99)
    camera = photos(200, basis, spread=2.0, shift=0.5)
    subject = photos(200, rng.normal(0, 1, (6, d)))
    assert np.mean([v.passed for v in check.verdicts(camera)]) >= 0.9
    assert np.mean([v.passed for v in check.verdicts(subject)]) <= 0.1


@pytest.mark.parametrize("method", ["residual", "knn", "mahalanobis"])
def test_distribution_check_round_trips_through_its_file(tmp_path, method):
    rng = np.random.default_rng(6)
    features = rng.normal(0, 1, (300, 16))
    check = DistributionCheck.fit(features, _splits(300), method)
    check.save(tmp_path)
    loaded = DistributionCheck.load(tmp_path)
    probe = rng.normal(0, 1, (20, 16))
    np.testing.assert_allclose(loaded.typicality(probe), check.typicality(probe), atol=0.01)
    assert DistributionCheck.load(tmp_path / "none") is None
