"""Metrics against values worked out by hand on tiny examples."""

from __future__ import annotations

import numpy as np
import pytest

from cardamage.metrics.classification import (
    decide,
    headline,
    headline_name,
    task_metrics,
    tune_thresholds,
)
from cardamage.tasks import Task, TaskKind

# Any warning (sklearn's UndefinedMetricWarning included) fails these tests.
pytestmark = pytest.mark.filterwarnings("error")

# --- multiclass: labels a, b, c, d; d never true nor predicted --------------------------------
#   true: a a a b b c
#   pred: a a b b c c          -> 4 of 6 right: accuracy 4/6
# confusion (rows true a,b,c,d; cols predicted): a [2 1 0 0], b [0 1 1 0], c [0 0 1 0], d [0 0 0 0]
#   a: P 2/2, R 2/3, F1 = 2*1*(2/3)/(5/3) = 0.8, support 3
#   b: P 1/2, R 1/2, F1 0.5,                      support 2
#   c: P 1/2, R 1/1, F1 = 2*.5/1.5 = 2/3,         support 1
#   d: all 0 (zero_division=0),                   support 0
# balanced accuracy = mean recall over classes in y_true = (2/3 + 1/2 + 1) / 3 = 13/18
# macro-F1 over labels seen (a, b, c) = (0.8 + 0.5 + 2/3) / 3 = 59/90
MC = Task("sev", TaskKind.MULTICLASS, ("a", "b", "c", "d"))
MC_TRUE = MC.encode([["a"], ["a"], ["a"], ["b"], ["b"], ["c"]])
MC_SCORE = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.4, 0.3, 0.2, 0.1],
        [0.3, 0.5, 0.1, 0.1],
        [0.1, 0.6, 0.2, 0.1],
        [0.1, 0.3, 0.5, 0.1],
        [0.0, 0.1, 0.8, 0.1],
    ]
)

# --- multilabel: labels x, y, z; z has no positive --------------------------------------------
#         truth x y z   score x    y     z   decided at 0.5 (x y z)
#   s0          1 0 0        .9   .3    .1       1 0 0   all right
#   s1          1 1 0        .6   .8    .2       1 1 0   all right
#   s2          0 1 0        .7   .52   .1       1 1 0   x wrong
#   s3          0 0 0        .2   .6    .7       0 1 1   y, z wrong
#   s4          1 0 0        .4   .2    .1       0 0 0   x wrong
#   s5          0 1 0        .1   .65   .3       0 1 0   all right
# x: TP 2 (s0,s1) FP 1 (s2) FN 1 (s4) -> P 2/3 R 2/3 F1 2/3
# y: TP 3 FP 1 (s3) FN 0             -> P 3/4 R 1   F1 = 1.5/1.75 = 6/7
# z: TP 0 FP 1 (s3)                  -> P 0 R 0 F1 0, support 0
# binary accuracy: wrong cells 2 (x) + 1 (y) + 1 (z) = 4 of 18 -> 14/18
# exact match: s0, s1, s5 -> 3/6
# micro-F1: TP 5 FP 3 FN 1 -> 10 / (10 + 3 + 1) = 5/7
# macro-F1 over labels seen (z is predicted once) = (2/3 + 6/7 + 0) / 3 = 32/63
# AP x, ranked .9 P, .7 N, .6 P, .4 P, .2 N, .1 N: (1/1 + 2/3 + 3/4) / 3 = 29/36
# AP y, ranked .8 P, .65 P, .6 N, .52 P, ...:        (1 + 1 + 3/4) / 3 = 11/12
# mAP over x, y = (29/36 + 33/36) / 2 = 31/36
# AUC x: positives .9 .6 .4 beat negatives .7 .2 .1 in 3 + 2 + 2 of 9 pairs = 7/9
# AUC y: positives .8 .65 .52 beat .6 .3 .2 in 3 + 3 + 2 of 9 pairs = 8/9
ML = Task("loc", TaskKind.MULTILABEL, ("x", "y", "z"))
ML_TRUE = ML.encode([["x"], ["x", "y"], ["y"], [], ["x"], ["y"]])
ML_SCORE = np.array(
    [
        [0.9, 0.3, 0.1],
        [0.6, 0.8, 0.2],
        [0.7, 0.52, 0.1],
        [0.2, 0.6, 0.7],
        [0.4, 0.2, 0.1],
        [0.1, 0.65, 0.3],
    ]
)


def test_multiclass_metrics_by_hand():
    m = task_metrics(MC, MC_TRUE, MC_SCORE)
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(13 / 18)
    assert m["macro_f1"] == pytest.approx(59 / 90)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    expected = {
        "a": (1.0, 2 / 3, 0.8, 3),
        "b": (0.5, 0.5, 0.5, 2),
        "c": (0.5, 1.0, 2 / 3, 1),
        "d": (0.0, 0.0, 0.0, 0),
    }
    for label, (p, r, f1, support) in expected.items():
        stats = m["per_label"][label]
        assert stats == pytest.approx({"precision": p, "recall": r, "f1": f1, "support": support})
        assert isinstance(stats["support"], int)


def test_multiclass_balanced_accuracy_ignores_class_only_predicted():
    # true a a b, pred a c b: recall a 1/2, b 1; c is absent from y_true -> (1/2 + 1) / 2
    task = Task("t", TaskKind.MULTICLASS, ("a", "b", "c"))
    y_true = task.encode([["a"], ["a"], ["b"]])
    m = task_metrics(task, y_true, np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]]))
    assert m["balanced_accuracy"] == pytest.approx(0.75)


def test_multilabel_metrics_by_hand():
    m = task_metrics(ML, ML_TRUE, ML_SCORE)
    assert m["n"] == 6
    assert m["binary_accuracy"] == pytest.approx(14 / 18)
    assert m["exact_match"] == pytest.approx(3 / 6)
    assert m["micro_f1"] == pytest.approx(5 / 7)
    assert m["macro_f1"] == pytest.approx(32 / 63)
    assert m["mAP"] == pytest.approx(31 / 36)
    x, y, z = (m["per_label"][k] for k in "xyz")
    assert x == pytest.approx(
        {
            "precision": 2 / 3,
            "recall": 2 / 3,
            "f1": 2 / 3,
            "support": 3,
            "roc_auc": 7 / 9,
            "average_precision": 29 / 36,
            "threshold": 0.5,
        }
    )
    assert y == pytest.approx(
        {
            "precision": 0.75,
            "recall": 1.0,
            "f1": 6 / 7,
            "support": 3,
            "roc_auc": 8 / 9,
            "average_precision": 11 / 12,
            "threshold": 0.5,
        }
    )
    assert z == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
        "roc_auc": None,
        "average_precision": None,
        "threshold": 0.5,
    }


def test_ranking_metrics_none_for_label_without_negative():
    task = Task("t", TaskKind.MULTILABEL, ("p", "q"))
    y_true = np.array([[1, 0], [1, 1]])
    m = task_metrics(task, y_true, np.array([[0.9, 0.2], [0.3, 0.8]]))
    assert m["per_label"]["p"]["roc_auc"] is None
    assert m["per_label"]["p"]["average_precision"] is None
    assert m["mAP"] == pytest.approx(1.0)  # q alone: its one positive ranks first


def test_thresholds_change_decisions_and_f1():
    # x at 0.35: s4 (.4) becomes positive -> x TP 3 FP 1 FN 0: P 3/4 R 1 F1 6/7;
    # exact match gains s4 -> 4/6; binary accuracy stays at the fixed 0.5 cut: 14/18.
    task = ML.with_thresholds([0.35, 0.5, 0.5])
    assert decide(task, ML_SCORE)[:, 0].tolist() == [True, True, True, False, True, False]
    m = task_metrics(task, ML_TRUE, ML_SCORE)
    x = m["per_label"]["x"]
    assert (x["precision"], x["recall"], x["f1"]) == pytest.approx((0.75, 1.0, 6 / 7))
    assert x["threshold"] == 0.35
    assert m["exact_match"] == pytest.approx(4 / 6)
    assert m["binary_accuracy"] == pytest.approx(14 / 18)


def test_binary_accuracy_uses_keras_strict_cut_at_half():
    # Keras BinaryAccuracy counts score > 0.5 as positive: 0.5 on a positive is a miss for it,
    # while the decision threshold 0.5 (score >= threshold) calls it positive.
    task = Task("t", TaskKind.MULTILABEL, ("p",))
    m = task_metrics(task, np.array([[1], [0]]), np.array([[0.5], [0.2]]))
    assert m["binary_accuracy"] == pytest.approx(0.5)
    assert m["exact_match"] == pytest.approx(1.0)


def test_decide_multiclass_is_argmax_one_hot():
    assert decide(MC, MC_SCORE).sum(axis=1).tolist() == [1] * 6
    assert decide(MC, MC_SCORE).argmax(axis=1).tolist() == [0, 0, 1, 1, 2, 2]


def test_headline():
    assert headline_name(MC) == "CategoricalAccuracy"
    assert headline_name(ML) == "BinaryAccuracy"
    assert headline(MC, task_metrics(MC, MC_TRUE, MC_SCORE)) == pytest.approx(4 / 6)
    assert headline(ML, task_metrics(ML, ML_TRUE, ML_SCORE)) == pytest.approx(14 / 18)


def test_tune_thresholds_separable_and_no_positive():
    # label 0: positives .3-.4, negatives .1-.2 -> F1-best cut .3, midway to .2 -> .25, F1 1.
    # label 1: no positive -> 0.5.
    y_true = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0]])
    y_score = np.array([[0.3, 0.1], [0.35, 0.9], [0.4, 0.2], [0.1, 0.3], [0.15, 0.4], [0.2, 0.6]])
    thresholds = tune_thresholds(y_true, y_score)
    assert 0.2 < thresholds[0] < 0.3
    assert thresholds[1] == 0.5
    task = Task("t", TaskKind.MULTILABEL, ("p", "q"), tuple(thresholds))
    assert task_metrics(task, y_true, y_score)["per_label"]["p"]["f1"] == pytest.approx(1.0)


def test_tune_thresholds_picks_f1_best_not_first_positive():
    # scores .9 P, .8 N, .7 P, .6 P, .5 N, .4 P, .1 N (4 positives). Cutting below each score:
    # .9: P1 R1/4 F1 .4 | .8: 1/2,1/4 -> 1/3 | .7: 2/3,1/2 -> 4/7 | .6: 3/4,3/4 -> .75
    # .5: 3/5,3/4 -> 2/3 | .4: 4/6,1 -> .8 (best) | .1: 4/7,1 -> 8/11.
    # Best cut .4, midway to the next-lower score .1 -> .25.
    truth = np.array([[1], [0], [1], [1], [0], [1], [0]])
    score = np.array([[0.9], [0.8], [0.7], [0.6], [0.5], [0.4], [0.1]])
    assert tune_thresholds(truth, score)[0] == pytest.approx(0.25)


def test_tune_thresholds_clipped():
    truth = np.array([[1], [0]])
    assert tune_thresholds(truth, np.array([[0.02], [0.01]]))[0] == pytest.approx(0.05)
    high = tune_thresholds(truth, np.array([[0.99], [0.98]]), max_threshold=0.9)
    assert high[0] == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("task", "y_true", "y_score"),
    [
        (ML, ML_TRUE[:, :2], ML_SCORE[:, :2]),  # wrong label count
        (ML, ML_TRUE, ML_SCORE[:3]),  # rows differ
        (ML, ML_TRUE * 2, ML_SCORE),  # not 0/1
        (MC, np.zeros_like(MC_TRUE), MC_SCORE),  # multiclass row not one-hot
    ],
)
def test_task_metrics_rejects_bad_shapes(task, y_true, y_score):
    with pytest.raises(ValueError):
        task_metrics(task, y_true, y_score)
