"""RunDir: the one place that names and formats a run directory's files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cardamage.errors import CardamageError
from cardamage.metrics.label_review import LABEL_ISSUE_COLUMNS, Issue
from cardamage.runs.rundir import (
    VIEW_SCORES,
    FoldFiles,
    RunDir,
    read_evaluation,
    write_evaluation,
)


def test_file_names_are_those_of_existing_runs(tmp_path: Path) -> None:
    """Runs written before RunDir existed must still open: the names may not drift."""
    run = RunDir(tmp_path)
    names = {
        run.config_file: "config.json",
        run.versions_file: "versions.json",
        run.manifest_file: "manifest.csv",
        run.folds_file: "folds.json",
        run.oof_file: "oof_predictions.csv",
        run.summary_file: "summary.json",
        run.report_file: "report.html",
        run.model_dir: "model",
        run.results_file("damage_type"): "results_damage_type.txt",
        run.fold_model_dir(3): "folds/fold_3/model",
        run.curve_file(2, "severity", "loss"): "curves/fold2_severity_loss.png",
    }
    for path, name in names.items():
        assert path == tmp_path / name


def test_fold_files_round_trip_and_half_written_fold_is_cleared(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    scores = {"severity": np.array([[0.25, 0.75]])}
    views = {"severity": np.array([[0.5, 0.5]])}
    schedule = {"heads": [3], "fine_tune": None}
    run.write_fold(1, FoldFiles({"severity": {"n": 1}}, scores, schedule, views))
    found = run.finished_fold(1)
    assert found.metrics == {"severity": {"n": 1}} and found.schedule["heads"] == [3]
    np.testing.assert_array_equal(found.scores["severity"], scores["severity"])
    np.testing.assert_array_equal(found.view_scores["severity"], views["severity"])
    (run.fold_dir(1) / VIEW_SCORES).unlink()  # a fold from before views were averaged
    np.testing.assert_array_equal(run.finished_fold(1).view_scores["severity"], scores["severity"])
    (run.fold_dir(1) / "metrics.json").unlink()  # killed before the fold finished
    assert run.finished_fold(1) is None and not run.fold_dir(1).exists()


def test_curves_listed_by_fold_without_guessing_names(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.curves_dir.mkdir()
    for fold, task, metric in [(2, "severity", "loss"), (1, "severity", "accuracy")]:
        run.curve_file(fold, task, metric).write_bytes(b"png")
    run.curve_file(1, "severity_extra", "loss").write_bytes(b"png")  # another task's
    assert [(f, m) for f, m, _ in run.curves(2, "severity")] == [(1, "accuracy"), (2, "loss")]


def test_label_issues_absent_present_and_malformed(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.label_issues() is None
    row = ("severity", "1", "images/a.jpg", "g1", "whole", "minor", "0.12")
    with open(run.label_issues_file, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([LABEL_ISSUE_COLUMNS, row])
    assert run.label_issues() == [
        Issue("severity", 1, "images/a.jpg", "g1", ("whole",), ("minor",), 0.12)
    ]
    run.label_issues_file.write_text("task,rank,image\nseverity,1,a.jpg\n", encoding="utf-8")
    with pytest.raises(CardamageError, match=r"label_issues\.csv: no column group, given"):
        run.label_issues()
    with open(run.label_issues_file, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([LABEL_ISSUE_COLUMNS, row, (*row[:6], "high")])
    with pytest.raises(CardamageError, match=r"label_issues\.csv line 3: .* 'high' is not a"):
        run.label_issues()


def test_heldout_evaluation_is_found_in_the_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.heldout() is None
    write_evaluation(run.heldout_dir, Path("test.csv"), {"severity": {"n": np.int64(3)}})
    assert run.heldout() == {"data": "test.csv", "tasks": {"severity": {"n": 3}}}
    assert read_evaluation(run.heldout_dir) == run.heldout()
