"""`cardamage assess` and `Predictor.assess`: claims in, one row per claim and one per photo out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.cli import main
from cardamage.cli.inference import SOME_UNREADABLE
from cardamage.inference.claims import ClaimPhoto, NoEvidence, assess_claim
from cardamage.inference.predictor import Predictor


@pytest.fixture
def claims(tmp_path: Path) -> Path:
    """Two claims as folders (one with a corrupt photo), one whose only photo is corrupt."""
    rng = np.random.default_rng(2)
    root = tmp_path / "claims"
    for claim, n in (("A", 3), ("B", 2), ("C", 0)):
        (root / claim).mkdir(parents=True)
        for k in range(n):
            pixels = rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)  # past the size check
            Image.fromarray(pixels).save(root / claim / f"{k}.jpg")
    (root / "A" / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    (root / "C" / "only.jpg").write_bytes(b"\xff\xd8 not really")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_folders_one_row_per_claim_and_photos_beside(claims, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["assess", str(claims), "--model", str(tiny_model_dir), "--out", str(out)])
    assert code == SOME_UNREADABLE
    rows = {r["claim"]: r for r in _rows(out / "claims.csv")}
    assert list(rows) == ["A", "B", "C"]
    assert rows["A"]["error"] == "" and rows["A"]["n_photos"] == "4"
    assert "bad.jpg" in rows["A"]["left_out"] and len(rows["A"]["photos"].split(";")) == 3
    assert "not assessed: none of its" in rows["C"]["error"]
    photos = _rows(out / "photos.csv")
    assert [p["claim"] for p in photos] == ["A"] * 4 + ["B"] * 2 + ["C"]
    # the claim row is the one rule applied to the photos' own predictions
    predictor = Predictor.load(tiny_model_dir)
    paths = sorted((claims / "A").glob("[0-9].jpg"))
    expected = assess_claim(
        "A", [ClaimPhoto(str(p), q) for p, q in zip(paths, predictor.predict(paths), strict=True)]
    )
    assert rows["A"]["severity"] == expected.tasks["severity"].labels[0]
    at_least = float(rows["A"]["severity:at_least:severe"])
    assert at_least == pytest.approx(expected.tasks["severity"].at_least["severe"], abs=1e-4)
    # the claim's own review verdict, in the columns a photo's has (a claim is never declined)
    assert rows["A"]["abstain"] == "no"
    assert rows["A"]["needs_review"] == ("yes" if expected.needs_review else "no")
    assert rows["A"]["review_reason"] == (expected.review_reason or "")
    api = predictor.assess([*paths, claims / "A" / "bad.jpg"], claim="A")
    assert api.tasks["severity"].labels == expected.tasks["severity"].labels
    assert [name for name, _ in api.left_out] == [str(claims / "A" / "bad.jpg")]


def test_manifest_jsonl(claims, tiny_model_dir, tmp_path):
    manifest = tmp_path / "photos.csv"
    manifest.write_text("image,claim\nA/0.jpg,c1\nB/0.jpg,c2\nA/1.jpg,c1\nB/1.jpg,\n")
    out = tmp_path / "out"
    args = ["assess", "--manifest", str(manifest), "--images", str(claims), "--out", str(out)]
    assert main([*args, "--model", str(tiny_model_dir), "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in (out / "claims.jsonl").read_text().splitlines()]
    assert [r["claim"] for r in records] == ["c1", "c2", "B/1.jpg"]  # no claim: a claim alone
    first = records[0]
    assert len(first["photos"]) == 2 and first["left_out"] == []
    assert set(first["prediction"]["severity"]["evidence"]) == {
        first["prediction"]["severity"]["label"]
    }
    assert "summary" in first
    assert set(first["trust"]) == {"needs_review", "review_reason", "confidence"}  # a claim's
    assert set(first["trust"]["confidence"]) == set(first["prediction"])
    photos = [json.loads(line) for line in (out / "photos.jsonl").read_text().splitlines()]
    assert [p["claim"] for p in photos] == ["c1", "c1", "c2", "B/1.jpg"]


def test_refusals(claims, tiny_model_dir, tmp_path, capsys):
    no_claim = tmp_path / "plain.csv"
    no_claim.write_text("image\nA/0.jpg\n")
    base = ["--model", str(tiny_model_dir), "--out", str(tmp_path / "o")]
    assert main(["assess", "--manifest", str(no_claim), "--images", str(claims), *base]) == 2
    assert "no 'claim' column" in capsys.readouterr().err
    assert main(["assess", *base]) == 2
    assert "either folders" in capsys.readouterr().err
    with pytest.raises(NoEvidence):
        Predictor.load(tiny_model_dir).assess([b"nope"])
