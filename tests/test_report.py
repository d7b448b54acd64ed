"""results.txt, training-curve PNGs and the summary JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cardamage.metrics.classification import task_metrics
from cardamage.metrics.results import plot_history, write_results_txt, write_summary_json
from cardamage.tasks import Task, TaskKind

SEVERITY = Task("severity", TaskKind.MULTICLASS, ("minor", "moderate", "severe", "whole"))
LOCATION = Task("location", TaskKind.MULTILABEL, ("front", "rear", "side"), (0.4, 0.5, 0.6))


def _folds(task: Task, seed: int = 0) -> tuple[list[dict], dict]:
    """Three folds of random predictions and their out-of-fold union."""
    rng = np.random.default_rng(seed)
    n, k = 30, len(task.labels)
    if task.multiclass:
        y_true = np.eye(k)[np.arange(n) % k]
    else:
        y_true = (rng.random((n, k)) < 0.4).astype(int)
    y_score = rng.random((n, k))
    folds = [task_metrics(task, y_true[i::3], y_score[i::3]) for i in range(3)]
    return folds, task_metrics(task, y_true, y_score)


@pytest.mark.parametrize("task", [SEVERITY, LOCATION])
def test_results_txt_has_original_summary_and_every_label(tmp_path, task):
    folds, oof = _folds(task)
    path = tmp_path / "results.txt"
    write_results_txt(path, task, folds, oof, best_fold=1)
    text = path.read_text()
    key = "accuracy" if task.multiclass else "binary_accuracy"
    values = [m[key] for m in folds]
    name = "CategoricalAccuracy" if task.multiclass else "BinaryAccuracy"
    assert f"{name} for cross validation splits:\n[{', '.join(f'{v:.4f}' for v in values)}]" in text
    assert f"on average: {np.mean(values):.4f}" in text
    assert "best iteration: 2" in text
    assert all(label in text for label in task.labels)
    assert ("Confusion matrix" in text) == task.multiclass
    assert all(line == line.rstrip() for line in text.splitlines())
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_results_txt_tables_aligned(tmp_path):
    folds, oof = _folds(LOCATION)
    path = tmp_path / "results.txt"
    write_results_txt(path, LOCATION, folds, oof, best_fold=0)
    lines = path.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("label"))
    table = lines[header : header + 1 + len(LOCATION.labels)]
    assert len({len(line) for line in table}) == 1  # right-aligned columns end together
    assert [line.split()[0] for line in table[1:]] == list(LOCATION.labels)
    assert "threshold" in table[0] and table[1].split()[-1] == "0.4000"


def test_results_txt_rejects_bad_best_fold(tmp_path):
    folds, oof = _folds(SEVERITY)
    with pytest.raises(ValueError):
        write_results_txt(tmp_path / "r.txt", SEVERITY, folds, oof, best_fold=3)


def test_plot_history_writes_pngs(tmp_path):
    history = {
        "loss": [1.0, 0.8, 0.6],
        "val_loss": [1.1, 0.9, 0.8],
        "severity_loss": [0.5, 0.4, 0.3],
        "val_severity_loss": [0.6, 0.5, 0.45],
        "severity_accuracy": [0.5, 0.6, 0.7],
        "val_severity_accuracy": [0.4, 0.5, 0.55],
        "damage_type_loss": [0.7, 0.6, 0.5],
        "damage_type_binary_accuracy": [0.6, 0.7, 0.8],  # no validation curve: training only
        "location_loss": [0.7, 0.6, 0.5],  # no accuracy key: loss plot only
        "val_location_loss": [0.8, 0.7, 0.6],
    }
    written = plot_history(
        history, lambda task, metric: tmp_path / "plots" / f"{task}_{metric}.png"
    )
    names = sorted(p.name for p in written)
    assert names == [
        "damage_type_accuracy.png",
        "damage_type_loss.png",
        "location_loss.png",
        "severity_accuracy.png",
        "severity_loss.png",
    ]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == names
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (500, 350)


def test_plot_history_empty(tmp_path):
    assert plot_history({"loss": [1.0], "val_loss": [1.2]}, lambda t, m: tmp_path / t) == []


def test_summary_json_round_trips_numpy(tmp_path):
    summary = {
        "accuracy": np.float32(0.5),
        "n": np.int64(3),
        "scores": np.array([[0.25, 0.75]]),
        "nested": {"ok": np.bool_(True), "values": (np.int32(1), 2.5)},
        "undefined": np.float64("nan"),
        "mAP": None,
    }
    path = tmp_path / "summary.json"
    write_summary_json(path, summary)
    assert json.loads(path.read_text()) == {
        "accuracy": 0.5,
        "n": 3,
        "scores": [[0.25, 0.75]],
        "nested": {"ok": True, "values": [1, 2.5]},
        "undefined": None,
        "mAP": None,
    }
