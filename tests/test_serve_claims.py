"""POST /v1/claims against a real uvicorn server: one assessment from several photos of one car,
each photo's prediction beside it, bad photos left out."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest_serve import encoded, live_server, noise_image

from cardamage.inference.predictor import Predictor
from cardamage.serve.app import create_app
from cardamage.serve.settings import ServeSettings

LIMITS = {"max_upload_mb": 1, "max_files": 6, "max_pixels": 1_000_000}
PHOTOS = [(f"view{i}.jpg", encoded(noise_image(80, 72, seed=i))) for i in range(3)]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path):
    settings = ServeSettings(model=tiny_model_dir, api_key=None, **LIMITS)
    with (
        live_server(create_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=30) as c,
    ):
        yield c


def _post(client: httpx.Client, files: list[tuple[str, bytes]], claim: str | None = "claim-7"):
    data = {} if claim is None else {"claim": claim}
    return client.post("/v1/claims", files=[("files", f) for f in files], data=data)


def test_a_claim_is_assessed_from_all_its_photos(client, tiny_model_dir):
    response = _post(client, PHOTOS)
    assert response.status_code == 200, response.text
    body = response.json()
    claim = body["claim"]
    assert claim["claim"] == "claim-7" and claim["left_out"] == []
    assert sorted(claim["photos"]) == [name for name, _ in PHOTOS]
    assert [r["filename"] for r in body["results"]] == [name for name, _ in PHOTOS]
    severity = claim["assessment"]["severity"]
    assert severity["kind"] == "multiclass" and set(severity["at_least"]) == {
        "minor",
        "moderate",
        "severe",
    }
    # the claim is the one rule over the photos' own predictions, as the Python API gives it
    expected = Predictor.load(tiny_model_dir).assess([data for _, data in PHOTOS])
    assert severity["label"] == expected.tasks["severity"].labels[0]
    assert claim["assessment"]["damage_type"]["labels"] == list(
        expected.tasks["damage_type"].labels
    )
    # each decision held to the model's review policy, its one confidence number beside it
    assert claim["needs_review"] == expected.needs_review
    assert claim.get("review_reason") == expected.review_reason  # absent when none
    assert set(claim["confidence"]) == set(claim["assessment"])
    shown = severity["confidence"]
    assert claim["confidence"]["severity"]["confidence"] == pytest.approx(shown, abs=1e-4)
    for check in claim["confidence"].values():
        assert check["sure"] == (
            check.get("threshold") is None or check["confidence"] >= check["threshold"]
        )


def test_a_bad_photo_gets_an_error_row_and_the_claim_is_assessed_from_the_rest(client):
    response = _post(
        client, [PHOTOS[0], ("notes.txt", b"not a photo"), PHOTOS[1], ("view0.jpg", b"")]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    results = body["results"]
    assert results[1]["error"]["code"] == "not_an_image" and "prediction" in results[0]
    assert results[3]["error"]["code"] == "empty_file"
    left_out = {x["photo"]: x["reason"] for x in body["claim"]["left_out"]}
    assert set(left_out) == {"notes.txt", "view0.jpg (2)"}  # a repeated name is told apart
    assert [r["filename"] for r in results] == [
        "view0.jpg",
        "notes.txt",
        "view1.jpg",
        "view0.jpg (2)",
    ]
    assert "not an image" in left_out["notes.txt"]
    assert sorted(body["claim"]["photos"]) == ["view0.jpg", "view1.jpg"]
    assert body["claim"]["partial"] == "from 2 of 4 photos" and body["claim"]["n_photos"] == 4


def _dark(seed: int) -> bytes:
    """A readable photo too dark to judge: declined, not refused."""
    return encoded(noise_image(80, 72, seed=seed).point(lambda v: v // 32))


def test_a_claim_whose_photos_are_all_declined_answers_each_photo_and_no_verdict(client):
    response = _post(client, [("night1.jpg", _dark(1)), ("night2.jpg", _dark(2))])
    assert response.status_code == 200, response.text
    body = response.json()
    claim = body["claim"]
    assert "assessment" not in claim and claim["photos"] == []
    assert claim["reason"] == "claim 'claim-7' not assessed: none of its 2 photo(s) could be used"
    for result in body["results"]:  # each photo's own result and reason, no answer
        assert "prediction" not in result
        assert result["trust"]["abstain"] is True
        assert result["trust"]["reason"].startswith("too dark to judge: retake in daylight")
        assert result["trust"]["confidence"] == {}
    assert [x["photo"] for x in claim["left_out"]] == ["night1.jpg", "night2.jpg"]


def test_a_claim_decision_has_one_confidence(client):
    severity = _post(client, PHOTOS).json()["claim"]["assessment"]["severity"]
    label = severity["label"]
    expected = severity["at_least"].get(label, severity["scores"][label])
    assert severity["confidence"] == pytest.approx(expected)


def test_a_claim_with_no_usable_photo_is_a_4xx(client):
    response = _post(client, [("a.txt", b"text"), ("b.jpg", b"")])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_usable_image"
    assert [f["filename"] for f in error["files"]] == ["a.txt", "b.jpg"]


def test_without_a_claim_id_the_claim_is_named_claim(client):
    assert _post(client, PHOTOS[:1], claim=None).json()["claim"]["claim"] == "claim"


def test_the_endpoint_is_documented(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert (
        "/v1/claims" in paths
        and "multipart/form-data" in paths["/v1/claims"]["post"]["requestBody"]["content"]
    )


def test_a_repeated_file_name_is_the_same_in_photos_and_results(client):
    body = _post(client, [PHOTOS[0], PHOTOS[0]]).json()
    assert sorted(body["claim"]["photos"]) == ["view0.jpg", "view0.jpg (2)"]
    assert [r["filename"] for r in body["results"]] == ["view0.jpg", "view0.jpg (2)"]


@pytest.mark.parametrize("where", ["params", "data"])
def test_heatmaps_asked_of_a_claim_are_refused_not_ignored(client, where):
    asked = {where: {"explain": "true"}}
    if where == "data":
        asked["data"]["claim"] = "claim-7"
    response = client.post("/v1/claims", files=[("files", f) for f in PHOTOS[:1]], **asked)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "explain_not_for_claims" and "/v1/predict" in error["message"]
    refused = client.post("/v1/claims?explain=false", files=[("files", PHOTOS[0])])
    assert refused.status_code == 200


def test_the_explain_refusal_is_documented(client):
    claims = client.get("/openapi.json").json()["paths"]["/v1/claims"]["post"]
    [explain] = [p for p in claims["parameters"] if p["name"] == "explain"]
    assert "refused (422)" in explain["description"] and "422" in claims["responses"]
