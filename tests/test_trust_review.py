"""How sure is the answer: the review policy on constructed scores, no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from cardamage.tasks import Task, TaskKind
from cardamage.trust.review import ReviewPolicy, confidence, correct

SEVERITY = Task("severity", TaskKind.MULTICLASS, ("a", "b", "c"), (0.5,) * 3)
TYPES = Task("damage_type", TaskKind.MULTILABEL, ("x", "y"), (0.3, 0.5))


def _scores(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated-looking softmax scores: the surer, the more often right."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), truth] += rng.uniform(0, 3, n)
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return np.eye(3)[truth], scores


def test_confidence_is_the_probability_of_the_decision():
    assert confidence(SEVERITY, np.array([[0.2, 0.7, 0.1]]))[0] == pytest.approx(0.7)
    # x found at 0.35 (threshold 0.3): 0.35; y not found at 0.1: 0.9; the least sure decides
    assert confidence(TYPES, np.array([[0.35, 0.1]]))[0] == pytest.approx(0.35)
    truth = np.array([[1, 0], [1, 1]])
    assert correct(TYPES, truth, np.array([[0.35, 0.1], [0.35, 0.1]])).tolist() == [True, False]


def test_a_coverage_target_answers_that_share_without_review_and_better_than_all():
    y, scores = _scores()
    policy = ReviewPolicy.fit([SEVERITY], {"severity": y}, {"severity": scores}, coverage=0.7)
    measured = policy.chosen_for["out_of_fold"]["severity"]
    assert measured["coverage"] == pytest.approx(0.7, abs=0.01)
    assert measured["risk"] < measured["risk_all"]
    fresh_y, fresh = _scores(seed=1)  # photos it was not fitted on
    sure = np.array([c["severity"].sure for c in policy.judge([SEVERITY], {"severity": fresh})])
    right = correct(SEVERITY, fresh_y, fresh)
    assert abs(sure.mean() - 0.7) < 0.05 and right[sure].mean() > right.mean()


def test_a_risk_target_keeps_the_error_rate_of_the_answers_under_it():
    y, scores = _scores()
    policy = ReviewPolicy.fit([SEVERITY], {"severity": y}, {"severity": scores}, 0.8, risk=0.1)
    measured = policy.chosen_for["out_of_fold"]["severity"]
    assert measured["risk"] <= 0.1 < measured["risk_all"] and 0 < measured["coverage"] < 1
    assert policy.chosen_for["risk"] == 0.1


def test_only_an_unsure_answer_carries_a_message(tmp_path):
    policy = ReviewPolicy({"severity": 0.6}, {"coverage": 0.8})
    sure, unsure = (
        c["severity"] for c in policy.judge([SEVERITY], {"severity": np.array([[0.1, 0.8, 0.1],
                                                                               [0.4, 0.5, 0.1]])})
    )  # fmt: skip
    assert sure.sure and sure.message is None and set(sure.to_dict()) == {
        "confidence", "threshold", "sure"
    }  # fmt: skip
    assert not unsure.sure
    assert unsure.message == "the severity is uncertain: a person should check it"
    assert unsure.detail == "confidence 50%, under 60%"
    policy.save(tmp_path)
    assert ReviewPolicy.load(tmp_path) == policy
    assert ReviewPolicy.load(tmp_path / "none").thresholds == {}  # an older model: all stand


def test_the_evaluation_reports_both_questions_apart():
    from cardamage.cli.training import abstention_line
    from cardamage.metrics.selective import selective_report

    y, scores = _scores(400)
    declined = np.zeros(400, bool)
    declined[:20] = True
    unsure = confidence(SEVERITY, scores) < 0.6
    report = selective_report(
        [SEVERITY],
        {"severity": y},
        {"severity": scores},
        declined,
        ["too dark to judge"] * 20,
        {"severity": unsure & ~declined},
    )
    entry = report["tasks"]["severity"]
    assert entry["sure"] == int((~declined & ~unsure).sum())
    assert entry["without_review"]["accuracy"] > entry["all"]["accuracy"]
    usable, sure = abstention_line(report, [SEVERITY]).splitlines()
    assert usable.startswith("usable photos: answered 380 of 400 (95%), severity accuracy ")
    assert usable.endswith("; declined: 20 too dark to judge")
    assert sure.startswith(
        f"sure enough: severity answered without review for {entry['sure']} of 380"
    )
