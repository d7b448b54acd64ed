"""`cardamage train --data DIR` on class folders split train / val / test, end to end: the test
split scored at the end exactly as `cardamage evaluate` scores it, and never seen before."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from folder_support import copy_photo, make_tree

from cardamage.cli import main as cli

TINY = [
    "--backbone", "mobilenet", "--alpha", "0.25", "--weights", "none", "--image-size", "32",
    "--folds", "2", "--epochs", "2", "--views", "1",
]  # fmt: skip


def train(root: Path, out: Path, *extra: str) -> str:
    """Run `cardamage train` on ``root`` into ``out``; its console output."""
    printed = io.StringIO()
    args = ["train", "--data", str(root), "--out", str(out), *TINY, *extra]
    with contextlib.redirect_stdout(printed):
        assert cli([*args, "--cache-dir", str(out.parent / "cache")]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train 6 / val 2 / test 2 photos a class, a test photo copied from train, a broken one."""
    root = make_tree(tmp_path_factory.mktemp("data") / "cars", {"train": 6, "val": 2, "test": 2})
    copy_photo(root / "train" / "minor" / "minor_train_0.jpg", root / "test" / "minor" / "c.jpg")
    (root / "train" / "severe" / "broken.jpg").write_bytes(b"no photo")
    return root


@pytest.fixture(scope="module")
def trained(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, train(tree, out, "--task", "severity", "--skip-bad")


def test_one_command_trains_and_scores_the_test_split(trained: tuple[Path, str]) -> None:
    run, printed = trained
    assert "24 images (train 18, val 6), 2 folds" in printed
    assert "severity labels with no folder (not learned): whole" in printed
    assert "test: 7 photos set apart, scored by the final model" in printed
    assert "test split scores on 7 images:" in printed
    assert f"wrote {run / 'heldout' / 'evaluation.json'}" in printed
    report = (run / "report.html").read_text()
    assert "Held out" in report and "test.csv" in report
    skipped = (run / "skipped.csv").read_text()
    assert "train/severe/broken.jpg" in skipped


def test_leakage_across_splits_is_reported_and_listed(trained: tuple[Path, str]) -> None:
    run, printed = trained
    assert "leakage: 1 near-identical photo pair across splits (test/train 1)" in printed
    assert f"all pairs: {run / 'leakage.csv'}" in printed
    with open(run / "leakage.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["image"], r["other_image"]) for r in rows] == [
        ("train/minor/minor_train_0.jpg", "test/minor/c.jpg")
    ]


def test_test_scores_are_what_cardamage_evaluate_gives(
    trained: tuple[Path, str], tree: Path, tmp_path: Path
) -> None:
    run, _ = trained
    recorded = json.loads((run / "heldout" / "evaluation.json").read_text())
    args = ["evaluate", "--model", str(run), "--data", str(run / "test.csv")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli([*args, "--images", str(tree), "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "evaluation.json").read_text())
    assert recorded == again
    assert recorded["data"] == str(run / "test.csv") and recorded["abstention"]["n"] == 7


def _images(path: Path, column: str = "image") -> set[str]:
    with open(path, newline="") as f:
        return {row[column] for row in csv.DictReader(f)}


@pytest.mark.slow
def test_no_test_photo_reaches_training(
    trained: tuple[Path, str], tree: Path, tmp_path: Path
) -> None:
    """Whatever the test photos are, the run trains, tunes and calibrates the same: a run on
    the same folders without `test` gives the same out-of-fold scores, folds and model file."""
    run, _ = trained
    test = _images(run / "test.csv")
    assert len(test) == 7 and all(image.startswith("test/") for image in test)
    for name in ("manifest.csv", "oof_predictions.csv", "label_issues.csv"):
        assert not test & _images(run / name), name
    folds = json.loads((run / "folds.json").read_text())
    assert not test & {image for fold in folds for image in fold["validation"]}

    without = tmp_path / "cars"
    shutil.copytree(tree, without, ignore=shutil.ignore_patterns("test"))
    other = tmp_path / "run"
    train(without, other, "--task", "severity", "--skip-bad")
    for name in ("folds.json", "oof_predictions.csv", "manifest.csv"):
        assert (run / name).read_text() == (other / name).read_text(), name
    model, alone = (json.loads((r / "model" / "model.json").read_text()) for r in (run, other))
    assert model["tasks"] == alone["tasks"]  # thresholds
    assert model["calibration"] == alone["calibration"]
    assert not (other / "heldout").exists() and not (other / "test.csv").exists()


@pytest.mark.slow
def test_val_split_validates_on_val_alone(tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    printed = train(tree, run, "--val-split", "--skip-bad", "--label-review", "heads")
    assert "24 images (train 18, val 6), 1 fixed validation split" in printed
    folds = json.loads((run / "folds.json").read_text())
    assert len(folds) == 1 and all(image.startswith("val/") for image in folds[0]["validation"])
    assert len(folds[0]["validation"]) == 6
    assert _images(run / "oof_predictions.csv") == set(folds[0]["validation"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 1 and summary["val_split"] is True
    assert summary["final_model"] == "best_fold"  # the model validated on val ships
    assert "test split scores on 7 images:" in printed
