"""Reused photos in the claim entry points: `cardamage assess --index`, POST /v1/claims (on
both stores), Predictor.assess, `cardamage index`, the claim card; and the degraded answers
(read-only index file, database down): the claims are assessed, with a warning instead of
``seen_before``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import pytest
from conftest_serve import live_server
from photo_index_support import (
    fresh_database,
    mirrored,
    pixels,
    read_only,
    resized,
    scene,
    writable,
)
from postgres_support import postgres_url  # noqa: F401 (a fixture)

from cardamage.cli import main
from cardamage.config import load_app_config
from cardamage.inference.photo_index.check import ReuseCheck
from cardamage.inference.photo_index.fingerprint import feature_space
from cardamage.inference.predictor import Predictor
from cardamage.serve.app import create_app
from cardamage.serve.settings import ServeSettings


def _save(folder: Path, images: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(folder / name, quality=95)
    return folder


@pytest.fixture
def claims(tmp_path: Path) -> tuple[Path, Path]:
    """Past claims A and B, and a new claim C reusing A's second photo (resized) beside a photo
    of its own."""
    past = tmp_path / "past"
    _save(past / "A", {"a0.jpg": scene(0), "a1.jpg": scene(1)})
    _save(past / "B", {"b0.jpg": scene(2)})
    new = tmp_path / "new"
    _save(new / "C", {"c0.jpg": resized(scene(1)), "c1.jpg": scene(3)})
    return past, new


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text().splitlines()))


def _assess(folder: Path, model: Path, out: Path, *flags: str) -> int:
    return main(["assess", str(folder), "--model", str(model), "--out", str(out), *flags])


def test_assess_finds_a_photo_of_an_earlier_claim(claims, tiny_model_dir, tmp_path, capsys):
    past, new = claims
    index = str(tmp_path / "index.sqlite")
    assert _assess(past, tiny_model_dir, tmp_path / "out1", "--index", index) == 0
    first = {r["claim"]: r for r in _rows(tmp_path / "out1" / "claims.csv")}
    assert first["A"]["seen_before"] == first["B"]["seen_before"] == ""
    assert _assess(new, tiny_model_dir, tmp_path / "out2", "--index", index) == 0
    [row] = _rows(tmp_path / "out2" / "claims.csv")
    a1 = str(past / "A" / "a1.jpg")
    assert row["seen_before"] == f"photos found in claim A: {new / 'C' / 'c0.jpg'} (copy of {a1})"
    photos = {Path(r["image"]).name: r for r in _rows(tmp_path / "out2" / "photos.csv")}
    assert photos["c0.jpg"]["seen_before"].startswith(f"A: {a1} (copy, similarity ")
    assert photos["c1.jpg"]["seen_before"] == ""
    assert "reused photos: claim C: photos found in claim A" in capsys.readouterr().err
    # assessing C again finds A again, never C itself (its photos were replaced, not doubled)
    assert _assess(new, tiny_model_dir, tmp_path / "out3", "--index", index) == 0
    assert _rows(tmp_path / "out3" / "claims.csv")[0]["seen_before"] == row["seen_before"]


def test_a_read_only_index_costs_the_check_not_the_claims(claims, tiny_model_dir, tmp_path, capsys):
    past, new = claims
    index = tmp_path / "index.sqlite"
    assert _assess(past, tiny_model_dir, tmp_path / "out1", "--index", str(index)) == 0
    without = tmp_path / "plain"
    assert _assess(new, tiny_model_dir, without) == 0
    read_only(index)
    try:
        capsys.readouterr()
        assert _assess(new, tiny_model_dir, tmp_path / "out2", "--index", str(index)) == 0
    finally:
        writable(index)
    [row] = _rows(tmp_path / "out2" / "claims.csv")
    assert row["seen_before"].startswith(f"not checked for reused photos: photo index {index}")
    assert "readonly" in row["seen_before"].replace("-", "").replace(" ", "")
    assert row["severity"] == _rows(without / "claims.csv")[0]["severity"]  # the same answer
    assert "cardamage: warning: not checked for reused photos" in capsys.readouterr().err


def test_predictor_assess_with_an_index(tiny_model_dir, tmp_path):
    predictor = Predictor.load(tiny_model_dir)
    reuse = ReuseCheck(tmp_path / "index.sqlite", feature_space(predictor.meta))
    first = predictor.assess([pixels(scene(5)), pixels(scene(6))], claim="X", index=reuse)
    assert first.seen_before is not None and first.seen_before.message is None
    second = predictor.assess([pixels(mirrored(scene(6)))], claim="Y", index=reuse)
    assert second.seen_before.claims == ["X"]
    assert second.to_dict()["seen_before"]["photos"]["photo 1"][0]["photo"] == "photo 2"
    assert "seen_before" not in predictor.assess([pixels(scene(6))], claim="Z").to_dict()


def _jpeg(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _post(client: httpx.Client, files: dict, claim: str | None):
    data = {} if claim is None else {"claim": claim}
    parts = [("files", (name, _jpeg(image))) for name, image in files.items()]
    response = client.post("/v1/claims", files=parts, data=data)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(params=["sqlite", "postgresql"])
def index_location(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "index.sqlite")
    return fresh_database(request.getfixturevalue("postgres_url"))


def _client(model: Path, location: str):
    settings = ServeSettings(model=model, api_key=None, photo_index=location)
    return live_server(create_app(settings))


def test_the_api_says_which_claim_a_photo_was_found_in(tiny_model_dir, index_location):
    with (
        _client(tiny_model_dir, index_location) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        first = _post(client, {"front.jpg": scene(7), "side.jpg": scene(8)}, "K-1")
        assert first["claim"]["seen_before"] == {"claims": [], "photos": {}}
        assert [r["seen_before"] for r in first["results"]] == [[], []]
        body = _post(client, {"new.jpg": scene(9), "old.jpg": mirrored(scene(8))}, "K-2")
        seen = body["claim"]["seen_before"]
        assert seen["message"] == "photos found in claim K-1: old.jpg (copy of side.jpg)"
        assert list(body["claim"])[:2] == ["claim", "seen_before"]  # at the top
        new, old = body["results"]
        assert new["seen_before"] == []
        [match] = old["seen_before"]
        assert (match["claim"], match["photo"], match["kind"]) == ("K-1", "side.jpg", "copy")
        anonymous = _post(client, {"side.jpg": scene(8)}, None)  # no claim id: not indexed
        assert "seen_before" not in anonymous["claim"]
        assert "seen_before" not in anonymous["results"][0]


def test_a_database_that_is_down_gives_a_claim_with_a_warning(tiny_model_dir, tmp_path):
    down = f"postgresql://cardamage@/cardamage?host={tmp_path}&connect_timeout=2"
    with (
        _client(tiny_model_dir, down) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        body = _post(client, {"a.jpg": scene(1)}, "K-3")
    seen = body["claim"]["seen_before"]
    assert "message" not in seen and "cannot connect" in seen["warning"]
    assert "seen_before" not in body["results"][0]  # not checked: no empty list that says 'none'
    assert body["claim"]["assessment"]["severity"]["label"]


def test_index_commands_build_search_delete_stats(claims, tiny_model_dir, tmp_path, capsys):
    past, new = claims
    index = str(tmp_path / "index.sqlite")
    model = ["--model", str(tiny_model_dir), "--index", index]
    assert main(["index", "build", str(past), *model]) == 0
    assert main(["index", "stats", "--index", index]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["photos"], stats["claims"], stats["skipped"]) == (3, 2, 0)
    found = main(["index", "search", str(new / "C" / "c0.jpg"), *model])
    [line] = capsys.readouterr().out.splitlines()
    assert found == 1 and json.loads(line)["photo"] == str(past / "A" / "a1.jpg")
    assert main(["index", "search", str(new / "C" / "c1.jpg"), *model]) == 0
    assert main(["index", "delete", "A", "--index", index]) == 0
    assert "deleted 2 photo(s) of claim A" in capsys.readouterr().out
    assert main(["index", "search", str(new / "C" / "c0.jpg"), *model]) == 0
    assert main(["index", "stats"]) == 2  # no index named: a clear error
    assert "no photo index" in capsys.readouterr().err


def test_the_config_names_the_index_relative_to_itself(tmp_path, tiny_model_dir):
    config = tmp_path / "conf" / "application_config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"model": str(tiny_model_dir), "photo_index": "idx.sqlite"}))
    assert load_app_config(config).photo_index == str(config.parent / "idx.sqlite")
    url = "postgresql://u@db.example/claims"
    config.write_text(json.dumps({"model": str(tiny_model_dir), "photo_index": url}))
    assert load_app_config(config).photo_index == url
