"""`cardamage predict`: folders, every output format, error rows, heatmaps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.cli import main
from cardamage.inference.predictor import Predictor


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "sub/c.webp"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(photos / name)
    (photos / "corrupt.jpg").write_bytes((photos / "a.jpg").read_bytes()[:100])
    (photos / "notes.txt").write_text("not a photo")
    return photos


def test_csv_rows_with_error_row_and_summary(
    folder: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out.csv"
    code = main(["predict", str(folder), "--model", str(tiny_model_dir), "--output", str(out)])
    assert code == 0
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
    assert main(args) == 0
    text = out.read_text()
    records = json.loads(text) if fmt == "json" else [json.loads(x) for x in text.splitlines()]
    assert len(records) == 4
    good = [r for r in records if r["error"] is None]
    assert len(good) == 3 and {"severity", "location", "damage_type"} == set(good[0]["prediction"])


def test_missing_model_and_missing_file(
    folder: Path, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    assert main(["predict", str(folder), "--model", str(tmp_path / "none")]) == 2
    assert "no trained model" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "gone.jpg"), "--model", str(tiny_model_dir)]) == 1


def test_explain_writes_one_overlay_per_task(
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
    written = sorted(p.name for p in heatmaps.iterdir())
    assert written == ["a_damage_type.png", "a_location.png", "a_severity.png"]
    assert Image.open(heatmaps / "a_severity.png").size == (50, 40)
