"""End to end: generated photos -> 2 folds x 2 epochs -> a complete run directory -> reload."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from cardamage.cli import main as cli
from cardamage.config import load_train_config
from cardamage.inference.predictor import Predictor
from cardamage.reports.html_report import write_html_report
from cardamage.synthetic import generate_dataset
from cardamage.train.crossval import cross_validate
from cardamage.trust.calibrators import calibrate

TASKS = ("severity", "location", "damage_type")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), n=48, size=64, seed=3)


def options(data: Path, out: Path, **extra) -> dict:
    return {
        "data": data,
        "out": out,
        "backbone": "mobilenet",
        "alpha": 0.25,
        "weights": "none",
        "image_size": 32,
        "folds": 2,
        "epochs": 2,
        "views": 2,
        "cache_dir": out.parent / "cache",
    } | extra


@pytest.fixture(scope="module")
def run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    cross_validate(load_train_config(None, options(dataset, out)))
    return out


def test_run_directory_contents(run: Path) -> None:
    for name in (
        "config.json",
        "versions.json",
        "summary.json",
        "folds.json",
        "manifest.csv",
        "oof_predictions.csv",
        "label_issues.csv",
        "model/model.keras",
        "model/model.json",
    ):
        assert (run / name).is_file(), name
    for fold in (1, 2):
        for name in ("model/model.keras", "history.csv", "metrics.json", "view_scores.npz"):
            assert (run / "folds" / f"fold_{fold}" / name).is_file()
        for task in TASKS:
            for kind in ("accuracy", "loss"):
                assert (run / "curves" / f"fold{fold}_{task}_{kind}.png").is_file()
    versions = json.loads((run / "versions.json").read_text())
    assert {"keras", "numpy", "python"} <= set(versions)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 2 and summary["best_fold"] in (1, 2)
    for task in TASKS:
        text = (run / f"results_{task}.txt").read_text()
        assert (
            "cross validation splits" in text and "on average" in text and "best iteration" in text
        )
        assert len(summary["tasks"][task]["headline"]["per_fold"]) == 2


def test_each_fold_keeps_its_view_averaged_scores(run: Path) -> None:
    """What label review ranks by (the validation scores averaged over the cached views) is
    kept with the fold, so a resumed run reviews as a run that never stopped."""
    fold = run / "folds" / "fold_1"
    with np.load(fold / "scores.npz") as plain, np.load(fold / "view_scores.npz") as views:
        for task in TASKS:
            assert views[task].shape == plain[task].shape
        np.testing.assert_allclose(views["severity"].sum(axis=1), 1.0, rtol=1e-5)


def test_label_review_off_writes_no_issues(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cross_validate(load_train_config(None, options(dataset, out, label_review="off")))
    assert (out / "model" / "model.json").is_file() and not (out / "label_issues.csv").exists()


def test_every_image_validated_once(run: Path) -> None:
    folds = json.loads((run / "folds.json").read_text())
    validated = [image for fold in folds for image in fold["validation"]]
    assert len(validated) == len(set(validated)) == 48


def test_saved_model_records_its_tasks(run: Path) -> None:
    rows = list(csv.DictReader((run / "oof_predictions.csv").read_text().splitlines()))
    assert len(rows) == 48
    meta = json.loads((run / "model" / "model.json").read_text())
    assert [t["name"] for t in meta["tasks"]] == list(TASKS)
    assert meta["info"]["final_model"] == "refit"


@pytest.mark.slow
def test_same_seed_trains_the_same_model(run: Path, dataset: Path, tmp_path: Path) -> None:
    """A second run from scratch (its own feature cache) with the same seed ships a model that
    scores every photo as the first one does: runs are reproducible."""
    again = tmp_path / "run"
    cross_validate(load_train_config(None, options(dataset, again)))
    images = sorted((dataset.parent / "images").glob("*.jpg"))[:4]
    first, second = Predictor.load(run).predict(images), Predictor.load(again).predict(images)
    for x, y in zip(first, second, strict=True):
        for task in TASKS:
            np.testing.assert_allclose(x.tasks[task].scores, y.tasks[task].scores, atol=1e-5)


def test_best_fold_choice_ships_that_folds_model(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = cross_validate(
        load_train_config(None, options(dataset, out, final_model="best_fold"))
    )
    images = sorted((dataset.parent / "images").glob("*.jpg"))[:3]
    shipped = Predictor.load(out)
    shipped_scores = shipped.predict(images)
    fold = Predictor.load(out / "folds" / f"fold_{summary.best_fold}" / "model").predict(images)
    calibration = shipped.meta.calibration["severity"]  # the fold's weights, the run's calibration
    for a, b in zip(shipped_scores, fold, strict=True):
        expected = calibrate(calibration, b.tasks["severity"].scores[None])[0]
        np.testing.assert_allclose(a.tasks["severity"].scores, expected, atol=1e-6)


def test_existing_run_is_not_overwritten(run: Path, dataset: Path, capsys) -> None:
    before = (run / "summary.json").read_bytes()
    code = cli(["train", "--data", str(dataset), "--out", str(run), "--weights", "none"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == before


def test_resuming_a_finished_run_changes_nothing(run: Path, capsys) -> None:
    """No refit, no label review, no file rewritten: the report keeps describing the model."""
    write_html_report(run)  # as `cardamage train` leaves a finished run
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert cli(["train", "--resume", str(run)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == files


def test_saved_models_carry_no_optimizer_state(run: Path) -> None:
    """The heads trainer trains the first fold's heads in place, compiled: saved as they are,
    their optimizer's moments went into the file, which nothing reads."""
    models = [run / "model", *sorted((run / "folds").glob("fold_*/model"))]
    assert len(models) == 3
    for model in models:
        with zipfile.ZipFile(model / "model.keras") as saved:
            weights = h5py.File(io.BytesIO(saved.read("model.weights.h5")))
            names: list[str] = []
            weights.visit(names.append)
        assert not [n for n in names if "optimizer" in n], model


def test_bad_rows_refused_or_skipped(dataset: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "labels.csv"
    lines = dataset.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "catastrophic", 1)
    lines.append("images/missing.jpg,minor,front,dent")
    bad.write_text("\n".join(lines) + "\n")
    tiny = "--backbone mobilenet --alpha 0.25 --weights none --image-size 32 --folds 2 --epochs 1"
    args = [
        "train", "--data", str(bad), "--images", str(dataset.parent), "--out", str(tmp_path / "r"),
        *tiny.split(), "--views", "1", "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "catastrophic" in err and "missing.jpg" in err and ":4:" in err
    assert not (tmp_path / "r").exists()
    assert cli([*args, "--skip-bad"]) == 0
    skipped = (tmp_path / "r" / "skipped.csv").read_text()
    assert "catastrophic" in skipped and "missing.jpg" in skipped


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backbone", "vgg99"], "unknown backbone 'vgg99'"),
        (["--weights", "/nope.h5"], "weights file not found"),
        (["--folds", "1"], "folds"),
    ],
)
def test_bad_options_are_one_line(dataset: Path, tmp_path: Path, capsys, extra, message) -> None:
    args = [
        "train",
        "--data",
        str(dataset),
        "--out",
        str(tmp_path / "r"),
        "--weights",
        "none",
        "--image-size",
        "32",
        "--cache-dir",
        str(tmp_path / "c"),
        *extra,
    ]
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
