"""`cardamage predict`: folders, every output format, error rows, heatmaps."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest_serve import car_photo
from PIL import Image

from cardamage.cli import main
from cardamage.cli.inference import SOME_UNREADABLE
from cardamage.inference.batch import Row, Writer
from cardamage.inference.predictor import Predictor


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "sub/c.webp"):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(photos / name)
    (photos / "corrupt.jpg").write_bytes((photos / "a.jpg").read_bytes()[:100])
    (photos / "notes.txt").write_text("not a photo")
    return photos


def test_csv_rows_with_error_row_and_summary(
    folder: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.csv"
    code = main(["predict", str(folder), "--model", str(tiny_model_dir), "--output", str(out)])
    assert code == SOME_UNREADABLE == 1  # the corrupt file: documented in --help and README
    rows = list(csv.DictReader(out.read_text().splitlines()))
    by_name = {Path(r["image"]).name: r for r in rows}
    assert set(by_name) == {"a.jpg", "b.png", "corrupt.jpg"}  # not recursive; .txt ignored
    assert "corrupt.jpg" in by_name["corrupt.jpg"]["error"]
    expected = Predictor.load(tiny_model_dir).predict([folder / "a.jpg"])[0]
    assert by_name["a.jpg"]["severity"] == expected.tasks["severity"].labels[0][0]
    assert float(by_name["a.jpg"]["severity:minor"]) == pytest.approx(
        expected.tasks["severity"].scores[0], abs=1e-4
    )
    assert "predicted 2 image(s), 1 could not be read" in capsys.readouterr().err
    good = [folder / "a.jpg", folder / "b.png"]
    assert main(["predict", *map(str, good), "--model", str(tiny_model_dir)]) == 0


def test_whole_reads_as_no_damage_in_the_summary_column(tiny_model_dir: Path) -> None:
    predictor = Predictor.load(tiny_model_dir)
    scores = {t.name: dict.fromkeys(t.labels, 0.1) for t in predictor.tasks}
    scores["severity"]["whole"] = 0.7
    scores["location"]["front"] = 0.9
    prediction = {
        "severity": {"kind": "multiclass", "label": "whole", "score": 0.7},
        "location": {"kind": "multilabel", "labels": ["front"]},
        "damage_type": {"kind": "multilabel", "labels": []},
    }
    for name, p in prediction.items():
        p["scores"] = scores[name]
    out = io.StringIO()
    writer = Writer(out, "csv", predictor)
    writer.write(Row("car.jpg", prediction=prediction))
    writer.close()
    [row] = csv.DictReader(out.getvalue().splitlines())
    assert row["summary"] == "severity: No damage 70%; location: front 90%; damage type: none found"
    assert row["severity"] == "whole"  # the label itself stays, for programs


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_formats_recursive(
    folder: Path, tiny_model_dir: Path, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    args = [
        "predict",
        str(folder),
        "--recursive",
        "--format",
        fmt,
        "--output",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--batch-size",
        "2",
    ]
    assert main(args) == SOME_UNREADABLE  # corrupt.jpg
    text = out.read_text()
    records = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
    assert len(records) == 4
    good = [r for r in records if r["error"] is None]
    assert len(good) == 3 and {"severity", "location", "damage_type"} == set(good[0]["prediction"])


def test_a_declined_photo_has_its_reason_and_no_answer_in_every_format(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """No label, no score, no heatmap: only why, for a person and the figures for engineers."""
    dark = tmp_path / "night.png"
    car_photo().point(lambda v: v // 40).save(dark)
    base = ["predict", str(dark), "--model", str(tiny_model_dir)]
    heatmaps = tmp_path / "heatmaps"
    assert main([*base, "--output", str(tmp_path / "o.csv"), "--explain", str(heatmaps)]) == 0
    [row] = csv.DictReader((tmp_path / "o.csv").read_text().splitlines())
    assert row["abstain"] == "yes" and row["needs_review"] == "no"
    reason = row["abstain_reason"]
    assert reason.startswith("too dark to judge: retake in daylight")
    assert row["abstain_detail"].startswith("brightness ")
    assert row["summary"] == f"not assessed: {reason}"
    answer = [k for k in row if k.startswith(("severity", "location", "damage_type"))]
    assert answer and all(row[k] == "" for k in answer)
    assert [p.name for p in heatmaps.iterdir()] == ["index.csv"]
    index = list(csv.DictReader((heatmaps / "index.csv").read_text().splitlines()))
    assert {r["shows"] for r in index} == {f"not assessed: {reason}"}
    assert main([*base, "--format", "jsonl", "--output", str(tmp_path / "o.jsonl")]) == 0
    record = json.loads((tmp_path / "o.jsonl").read_text())
    assert record["prediction"] is None and record["trust"]["abstain"] is True
    assert record["trust"]["confidence"] == {}
    assert record["trust"]["quality"]["size"] == {
        "name": "size", "value": 480.0, "threshold": 64.0, "passed": True
    }  # fmt: skip


def test_an_unsure_answer_is_given_and_marked_for_review(
    folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Question 2 apart from question 1: answered, with the answer, and flagged for a person."""
    import shutil

    from cardamage.trust.review import ReviewPolicy

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    ReviewPolicy({"severity": 0.999}, {"coverage": 0.8}).save(model)
    out = tmp_path / "o.csv"
    assert (
        main(["predict", str(folder / "a.jpg"), "--model", str(model), "--output", str(out)]) == 0
    )
    [row] = csv.DictReader(out.read_text().splitlines())
    assert row["abstain"] == "no" and row["severity"]  # answered...
    assert row["needs_review"] == "yes"  # ...but a person should check it
    assert row["review_reason"] == "the severity is uncertain: a person should check it"
    [prediction] = Predictor.load(model).predict([folder / "a.jpg"])
    confidence = prediction.trust_dict()["confidence"]["severity"]
    assert confidence["confidence"] == pytest.approx(
        prediction.tasks["severity"].labels[0][1], abs=1e-4
    )
    assert confidence["detail"].endswith(", under 100%") and not confidence["sure"]
    assert prediction.trust_dict()["confidence"]["location"]["threshold"] is None


def test_missing_model_and_missing_file(
    folder: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    assert main(["predict", str(folder), "--model", str(tmp_path / "none")]) == 2
    assert "no trained model" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "gone.jpg"), "--model", str(tiny_model_dir)]) == 1


def test_explain_maps_only_what_was_found_with_a_caption(
    folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    heatmaps = tmp_path / "heatmaps"
    args = [
        "predict",
        str(folder / "a.jpg"),
        "--model",
        str(tiny_model_dir),
        "--output",
        str(tmp_path / "o.csv"),
        "--explain",
        str(heatmaps),
    ]
    assert main(args) == 0
    prediction = Predictor.load(tiny_model_dir).predict([folder / "a.jpg"])[0].to_dict()
    found = {name for name, p in prediction.items() if p["kind"] == "multiclass" or p["labels"]}
    written = sorted(p.name for p in heatmaps.iterdir())
    assert written == sorted([*(f"a_{task}.png" for task in found), "index.csv"])
    index = {
        r["task"]: r for r in csv.DictReader((heatmaps / "index.csv").read_text().splitlines())
    }
    for task in prediction:
        if task not in found:  # nothing over its threshold: no map of the top label's noise
            assert index[task]["shows"] == "none found" and index[task]["heatmap"] == ""
    severity = prediction["severity"]
    assert index["severity"]["shows"].startswith(severity["label"].replace("whole", "No damage"))
    width, height = Image.open(heatmaps / "a_severity.png").size
    assert width >= 50 and height > 40  # the photo, and under it the caption and colour scale


def test_explain_keeps_same_named_photos_of_different_folders_apart(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    """Cameras name photos IMG_0001.jpg in every claim: each claim keeps its own heatmaps."""
    photos = tmp_path / "claims"
    rng = np.random.default_rng(2)
    for claim in ("claimA", "claimB"):
        (photos / claim).mkdir(parents=True)
        noise = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
        Image.fromarray(noise).save(photos / claim / "IMG_0001.jpg")
    heatmaps = tmp_path / "heatmaps"
    args = ["predict", str(photos), "--recursive", "--model", str(tiny_model_dir)]
    assert main([*args, "--output", str(tmp_path / "o.csv"), "--explain", str(heatmaps)]) == 0
    a, b = (heatmaps / claim / "IMG_0001_severity.png" for claim in ("claimA", "claimB"))
    assert a.read_bytes() != b.read_bytes()
    index = list(csv.DictReader((heatmaps / "index.csv").read_text().splitlines()))
    where = {(Path(r["image"]).parent.name, r["task"]): r["heatmap"] for r in index}
    assert where[("claimA", "severity")] == "claimA/IMG_0001_severity.png"
    assert where[("claimB", "severity")] == "claimB/IMG_0001_severity.png"
    assert "index.csv" in capsys.readouterr().err

    # two folders given, each with IMG_0001.jpg at its top: under each folder's name
    again = tmp_path / "again"
    claims = [str(photos / "claimA"), str(photos / "claimB")]
    assert main(["predict", *claims, "--model", str(tiny_model_dir), "--explain", str(again)]) == 0
    assert (again / "claimA" / "IMG_0001_severity.png").exists()
    assert (again / "claimB" / "IMG_0001_severity.png").exists()
