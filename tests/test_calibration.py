"""Reliability curve, ECE and MCE against hand-computed bins."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from cardamage.metrics.calibration import reliability


def test_multilabel_pools_every_label_hand_computed():
    y_true = np.array([[1, 0, 1], [0, 0, 1]])
    y_score = np.array([[0.8, 0.1, 0.95], [0.6, 0.2, 0.7]])
    # bins [0, .25] (.25, .5] (.5, .75] (.75, 1]: {.1 no, .2 no}, {}, {.6 no, .7 yes}, {.8, .95 yes}
    r = reliability(y_true, y_score, bins=4, multiclass=False)
    assert r["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert r["count"] == [2, 0, 2, 2]
    assert r["confidence"] == pytest.approx([0.15, None, 0.65, 0.875])
    assert r["observed"] == pytest.approx([0.0, None, 0.5, 1.0])
    # gaps .15, .15, .125, two scores each, over six scores
    assert r["ece"] == pytest.approx((2 * 0.15 + 2 * 0.15 + 2 * 0.125) / 6)
    assert r["mce"] == pytest.approx(0.15)
    assert r["n"] == 6


def test_multiclass_uses_top_class_confidence_hand_computed():
    y_true = np.eye(3)[[0, 1, 2, 0]]
    y_score = np.array(
        [
            [0.7, 0.2, 0.1],  # top 0 at .7, right
            [0.3, 0.6, 0.1],  # top 1 at .6, right
            [0.5, 0.4, 0.1],  # top 0 at .5, wrong; .5 sits on an edge: lower bin, as in sklearn
            [0.2, 0.1, 0.7],  # top 2 at .7, wrong
        ]
    )
    r = reliability(y_true, y_score, bins=2, multiclass=True)
    assert r["count"] == [1, 3]
    assert r["confidence"] == pytest.approx([0.5, 2.0 / 3.0])
    assert r["observed"] == pytest.approx([0.0, 2.0 / 3.0])
    assert r["ece"] == pytest.approx(0.5 / 4)
    assert r["mce"] == pytest.approx(0.5)
    assert r["n"] == 4


def test_perfectly_calibrated_scores_have_no_error():
    y_true = np.array([[1], [1], [1], [0]])
    r = reliability(y_true, np.full((4, 1), 0.75), bins=10, multiclass=False)
    assert r["ece"] == pytest.approx(0.0) and r["mce"] == pytest.approx(0.0)
    assert sum(r["count"]) == 4 and r["count"][7] == 4


def test_agrees_with_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    y_score = rng.random((200, 3))
    y_true = (rng.random((200, 3)) < y_score).astype(int)
    r = reliability(y_true, y_score, bins=7, multiclass=False)
    observed, confidence = calibration_curve(y_true.ravel(), y_score.ravel(), n_bins=7)
    assert [v for v in r["observed"] if v is not None] == pytest.approx(observed)
    assert [v for v in r["confidence"] if v is not None] == pytest.approx(confidence)


@pytest.mark.parametrize(
    ("y_true", "y_score", "bins"),
    [
        (np.array([[1, 0]]), np.array([[0.5, 1.5]]), 10),  # not a probability
        (np.array([[1, 0]]), np.array([[0.5, np.nan]]), 10),
        (np.array([[1, 0]]), np.array([[0.5, 0.5, 0.0]]), 10),  # shapes differ
        (np.zeros((0, 2)), np.zeros((0, 2)), 10),  # nothing to bin
        (np.array([[1, 0]]), np.array([[0.5, 0.5]]), 0),
    ],
)
def test_rejects_bad_input(y_true, y_score, bins):
    with pytest.raises(ValueError):
        reliability(y_true, y_score, bins, multiclass=False)
