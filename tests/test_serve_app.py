"""The REST API against a real uvicorn server on loopback: answers, refusals, load, shutdown."""

from __future__ import annotations

import base64
import http.client
import io
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from conftest_serve import encoded, live_server, noise_image, slowed, wait_for
from PIL import Image

from cardamage.inference.predictor import Predictor
from cardamage.serve.app import create_app
from cardamage.serve.settings import ServeSettings

TASK_NAMES = ["severity", "location", "damage_type"]
LIMITS = {"max_upload_mb": 1, "max_files": 4, "max_pixels": 1_000_000}


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.load(tiny_model_dir)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path):
    with live_server(create_app(ServeSettings(model=tiny_model_dir, api_key=None, **LIMITS))) as s:
        yield s


@pytest.fixture(scope="module")
def client(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _post(client: httpx.Client, *files: tuple[str, bytes], **kwargs) -> httpx.Response:
    return client.post("/v1/predict", files=[("files", f) for f in files], **kwargs)


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds (almost) no pixels: a decompression bomb's start."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


JPEG = encoded(noise_image())


def test_health_live_and_ready(client):
    assert client.get("/v1/health/live").json() == {"status": "live"}
    assert client.get("/v1/health/ready").json() == {"status": "ready"}


def test_one_jpeg_gets_a_structured_prediction(client):
    response = _post(client, ("car.jpg", JPEG))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "results", "elapsed_ms"}
    assert body["model"]["id"] == "mobilenet-32px" and len(body["model"]["version"]) == 12
    assert body["elapsed_ms"] > 0
    [result] = body["results"]
    assert set(result) == {"filename", "prediction", "trust"}
    assert result["filename"] == "car.jpg"
    trust = result["trust"]  # the tiny model predates the distribution check: quality only
    assert set(trust["quality"]) == {"size", "dark", "bright", "uniform", "blur"}
    assert trust["abstain"] == (not all(c["passed"] for c in trust["quality"].values()))
    prediction = result["prediction"]
    assert list(prediction) == TASK_NAMES
    assert prediction["severity"]["kind"] == "multiclass"
    assert prediction["severity"]["label"] in prediction["severity"]["scores"]
    assert prediction["location"]["kind"] == "multilabel"
    assert sum(prediction["severity"]["scores"].values()) == pytest.approx(1, abs=1e-4)


def test_predictions_equal_the_predictors_on_the_same_bytes(client, predictor):
    photos = [encoded(noise_image(seed=i)) for i in range(3)]
    photos.append(encoded(noise_image(96, 72, seed=9), "PNG"))
    response = _post(client, *[(f"p{i}", data) for i, data in enumerate(photos)])
    served = [r["prediction"] for r in response.json()["results"]]
    expected = [p.to_dict() for p in predictor.predict(photos)]
    for got, want in zip(served, expected, strict=True):
        for name in TASK_NAMES:
            assert got[name]["scores"] == pytest.approx(want[name]["scores"], abs=1e-5)
            assert got[name].get("label") == want[name].get("label")


def test_several_files_keep_their_order_and_bad_ones_get_their_own_error(client):
    response = _post(
        client,
        ("a.jpg", JPEG),
        ("empty.jpg", b""),
        ("notes.txt", b"not an image at all"),
        ("b.png", encoded(noise_image(seed=3), "PNG")),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpg", "empty.jpg", "notes.txt", "b.png"]
    assert "prediction" in results[0] and "prediction" in results[3]
    assert results[1]["error"]["code"] == "empty_file"
    assert results[2]["error"]["code"] == "not_an_image"
    assert "prediction" not in results[1]


TRUNCATED = JPEG[: len(JPEG) // 2]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 422, "empty_file"),
        (b"%PDF-1.4 hello", 415, "not_an_image"),
        (TRUNCATED, 422, "corrupt_image"),
        (encoded(noise_image(), "TIFF"), 415, "unsupported_format"),
        (_png_header(2000, 1000), 422, "too_many_pixels"),
        (_png_header(40_000, 40_000), 422, "too_many_pixels"),  # past Pillow's own bomb limit
    ],
    ids=["zero-bytes", "not-an-image", "truncated", "tiff", "too-many-pixels", "bomb"],
)
def test_a_request_whose_only_file_is_bad_fails_with_a_clear_error(client, data, status, code):
    error = _error(_post(client, ("upload.bin", data)), status, code)
    assert "upload.bin" in error["message"]
    assert error["files"] == [
        {"filename": "upload.bin", "error": {"code": code, "message": error["message"]}}
    ]
    assert _post(client, ("good.jpg", JPEG)).status_code == 200  # and the server keeps serving


def test_a_bomb_past_pillows_guard_is_refused_with_the_configured_limit(client):
    error = _error(_post(client, ("bomb.png", _png_header(40_000, 40_000))), 422, "too_many_pixels")
    assert "1600000000 pixels exceeds the limit of 1000000" in error["message"]
    assert str(2 * Image.MAX_IMAGE_PIXELS) not in error["message"]  # Pillow's own limit


def test_when_every_file_is_bad_each_reason_is_listed(client):
    error = _error(_post(client, ("a", b""), ("b", b"text")), 422, "no_usable_image")
    assert [f["error"]["code"] for f in error["files"]] == ["empty_file", "not_an_image"]


def test_file_names_are_reduced_to_a_bare_printable_name(client):
    response = _post(client, ("../../etc/\x1bpasswd.jpg", JPEG), ("C:\\Users\\me\\car.jpg", JPEG))
    assert [r["filename"] for r in response.json()["results"]] == ["passwd.jpg", "car.jpg"]


def test_too_many_files_is_413(client):
    error = _error(_post(client, *[(f"{i}.jpg", JPEG) for i in range(5)]), 413, "too_many_files")
    assert "at most 4" in error["message"]


def test_a_file_over_the_size_limit_is_413(client):
    big = JPEG + b"\0" * (1024 * 1024)
    error = _error(_post(client, ("big.jpg", big)), 413, "file_too_large")
    assert "big.jpg" in error["message"] and "1 MB" in error["message"]


def test_a_huge_declared_body_is_refused_before_it_is_sent(server):
    """2 GB announced: the answer comes at once, having read nothing of the body."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 2147483648\r\n\r\n--b\r\n"
        )
        reply = http.client.HTTPResponse(conn)
        reply.begin()
        assert reply.status == 413 and b"request_too_large" in reply.read()


def test_a_huge_chunked_body_is_cut_off_at_the_limit(client):
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="x"\r\n\r\n'
        for _ in range(200):  # 12.5 MB, far over 4 files of 1 MB
            yield b"\0" * 65536

    response = client.post(
        "/v1/predict",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    _error(response, 413, "file_too_large")


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({}, 422, "missing_files"),
        ({"files": [("file", ("a.jpg", JPEG))]}, 422, "missing_files"),
        ({"data": {"explain": "false"}, "files": [("x", ("a", b"1"))]}, 422, "missing_files"),
        ({"json": {"files": []}}, 415, "unsupported_media_type"),
        (
            {
                "content": b"--b\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            400,
            "bad_multipart",
        ),
        (
            {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "bad_multipart",
        ),
        (
            {"files": [("files", ("a.jpg", JPEG))], "params": {"explain": "maybe"}},
            422,
            "invalid_request",
        ),
        (
            {"files": [("files", ("a.jpg", JPEG))], "data": {"explain": "maybe"}},
            422,
            "invalid_request",
        ),
    ],
    ids=[
        "no-body",
        "wrong-field",
        "fields-only",
        "json",
        "truncated-multipart",
        "no-boundary",
        "bad-explain-query",
        "bad-explain-form",
    ],
)
def test_malformed_requests_get_4xx_json(client, kwargs, status, code):
    _error(client.post("/v1/predict", **kwargs), status, code)


def test_a_malformed_upload_is_logged_as_one_clear_line(client, caplog):
    """Not python-multipart's bare 'Expected boundary character 45, ...': which request, what."""
    caplog.set_level(logging.DEBUG)
    body = b"a photo sent raw, not as multipart"
    response = client.post(
        "/v1/predict", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    _error(response, 400, "bad_multipart")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["cardamage.serve.uploads"], warnings
    line = warnings[0].getMessage()
    assert line.startswith("POST /v1/predict from 127.0.0.1:") and "400 bad_multipart" in line
    assert "malformed multipart body: Expected boundary character" in line


def test_missing_files_names_the_fields_it_got(client):
    error = _error(
        client.post("/v1/predict", files=[("file", ("a.jpg", JPEG))]), 422, "missing_files"
    )
    assert "'files'" in error["message"] and "file)" in error["message"]


def test_unknown_paths_and_methods_answer_json(client):
    _error(client.get("/v1/nothing"), 404, "not_found")
    _error(client.get("/v1/predict"), 405, "method_not_allowed")


def test_explain_returns_a_heatmap_png_per_task_that_found_something(client):
    response = _post(client, ("a.jpg", JPEG), ("bad", b""), params={"explain": "true"})
    assert response.status_code == 200, response.text
    good, bad = response.json()["results"]
    found = [n for n, p in good["prediction"].items() if p["kind"] == "multiclass" or p["labels"]]
    assert list(good["explanation"]) == found
    png = base64.b64decode(good["explanation"]["severity"])
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert "explanation" not in bad


def test_explain_maps_no_multilabel_task_that_found_nothing(tiny_model_dir):
    """A car with no damage type must not get a map of its top (0 %) label: the sky, say."""
    thresholds = {"location": 0.0, "damage_type": 1.0}  # every location; no damage type
    settings = ServeSettings(model=tiny_model_dir, api_key=None, thresholds=thresholds)
    with live_server(create_app(settings)) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        [result] = _post(c, ("a.jpg", JPEG), params={"explain": "true"}).json()["results"]
    assert result["prediction"]["damage_type"]["labels"] == []
    assert list(result["explanation"]) == ["severity", "location"]


def test_explain_without_heatmap_support_is_501(server, client, monkeypatch):
    monkeypatch.setattr(server.app.state.service, "explainer", None)
    _error(_post(client, ("a.jpg", JPEG), data={"explain": "on"}), 501, "explain_unavailable")
    assert _post(client, ("a.jpg", JPEG)).status_code == 200


def test_model_info(client, predictor):
    info = client.get("/v1/model").json()
    assert info["backbone"] == "mobilenet" and info["input_size"] == 32
    assert info["engine"] == "keras"
    assert [t["name"] for t in info["tasks"]] == TASK_NAMES
    for task, served in zip(predictor.tasks, info["tasks"], strict=True):
        assert served["labels"] == list(task.labels)
        if task.multiclass:  # the top class wins: no threshold applies
            assert "thresholds" not in served
        else:
            assert served["thresholds"] == dict(zip(task.labels, task.thresholds, strict=True))
    assert info["tasks"][0]["display_names"]["whole"] == "No damage"  # the page shows this
    assert info["training"] == {"out_of_fold": {}}
    assert info["limits"]["max_files"] == 4 and "jpeg" in info["limits"]["formats"]
    assert info["model"] == _post(client, ("a.jpg", JPEG)).json()["model"]


def test_the_page_answers_head_and_get(client):
    assert client.head("/").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>" in page.text


def test_openapi_and_offline_docs(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/model", "/v1/health/live", "/v1/health/ready"} <= set(spec["paths"])
    predict = spec["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictResponse"
    )
    assert {"413", "415", "422", "503"} <= set(predict["responses"])
    assert "securitySchemes" not in spec.get("components", {}), "no key: none documented"
    assert "401" not in predict["responses"] and "security" not in predict
    docs = client.get("/docs").text
    assert "cdn" not in docs and "/docs-assets/swagger-ui-bundle.js" in docs
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "app.css"):
        assert client.get(f"/static/{asset}").status_code == 200


@pytest.fixture(scope="module")
def keyed(predictor):
    settings = ServeSettings(api_key="s3cret", cors_origins=["https://claims.example"])
    with live_server(create_app(settings, predictor)) as s, httpx.Client(base_url=s.url) as c:
        yield c


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_with_an_api_key_requests_without_it_are_401(keyed, headers):
    _error(keyed.post("/v1/predict", files=[("files", JPEG)], headers=headers), 401, "unauthorized")
    _error(keyed.get("/v1/model", headers=headers), 401, "unauthorized")


def test_with_an_api_key_the_document_says_so(keyed):
    spec = keyed.get("/openapi.json").json()
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])
    predict = spec["paths"]["/v1/predict"]["post"]
    assert predict["security"] and "401" in predict["responses"]


def test_with_an_api_key_the_right_key_and_health_checks_pass(keyed):
    ok = {"X-API-Key": "s3cret"}
    assert keyed.post("/v1/predict", files=[("files", JPEG)], headers=ok).status_code == 200
    assert keyed.get("/v1/model", headers=ok).status_code == 200
    assert keyed.get("/v1/health/ready").status_code == 200
    assert keyed.get("/").status_code == 200


def test_without_an_api_key_no_key_is_needed(client):
    assert _post(client, ("a.jpg", JPEG), headers={"X-API-Key": "anything"}).status_code == 200


PREFLIGHT = {"Origin": "https://claims.example", "Access-Control-Request-Method": "POST"}


def test_cors_is_off_unless_configured(client):
    assert (
        "access-control-allow-origin"
        not in client.options("/v1/predict", headers=PREFLIGHT).headers
    )
    assert (
        "access-control-allow-origin"
        not in client.get("/v1/health/live", headers=PREFLIGHT).headers
    )


def test_cors_allows_the_configured_origins_only(keyed):
    allowed = keyed.options(
        "/v1/predict", headers=PREFLIGHT | {"Access-Control-Request-Headers": "x-api-key"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://claims.example"
    other = keyed.get("/v1/health/live", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def _in_thread(fn) -> tuple[threading.Thread, list]:
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    return thread, box


def _post_to(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files=[("files", JPEG)], timeout=60)


def test_overload_answers_503_with_retry_after(predictor):
    """One image may be in the system: a second request, while the first is held, is refused."""
    slow, engine = slowed(predictor)
    settings = ServeSettings(api_key=None, max_queue=1, max_files=1)
    with live_server(create_app(settings, slow)) as s:
        engine.hold()
        first, box = _in_thread(lambda: _post_to(s.url))
        assert engine.entered.wait(30)
        refused = _post_to(s.url)
        error = _error(refused, 503, "overloaded")
        assert int(refused.headers["Retry-After"]) >= 1 and "busy" in error["message"]
        engine.release()
        first.join()
        assert box[0].status_code == 200
        assert _post_to(s.url).status_code == 200


def test_concurrent_requests_share_one_batch(predictor):
    slow, engine = slowed(predictor)
    settings = ServeSettings(api_key=None, max_batch=8)
    with live_server(create_app(settings, slow)) as s:
        batcher = s.app.state.service.batcher
        engine.hold()
        engine.batch_sizes.clear()
        threads = [_in_thread(lambda: _post_to(s.url)) for _ in range(6)]
        assert engine.entered.wait(30)  # the first request's batch holds the worker
        wait_for(lambda: batcher.load == 6, "all six requests to be queued")
        engine.release()
        for thread, box in threads:
            thread.join()
            assert box[0].status_code == 200
    # the held first batch took one request or (on a slow machine) all of them; the rest share one
    assert len(engine.batch_sizes) <= 2 and sum(engine.batch_sizes) == 6


def test_not_ready_until_warm_then_ready(predictor):
    slow, engine = slowed(predictor)
    engine.hold()  # the warm-up waits
    with live_server(create_app(ServeSettings(api_key=None), slow), wait_ready=False) as s:
        assert httpx.get(f"{s.url}/v1/health/live").status_code == 200
        _error(httpx.get(f"{s.url}/v1/health/ready"), 503, "model_loading")
        _error(_post_to(s.url), 503, "model_loading")
        engine.release()
        assert s.app.state.service.wait_ready(30)
        assert httpx.get(f"{s.url}/v1/health/ready").status_code == 200


def test_a_model_that_fails_to_load_keeps_ready_at_503(tmp_path):
    settings = ServeSettings(model=tmp_path / "nothing", api_key=None)
    with live_server(create_app(settings), wait_ready=False) as s:
        wait_for(lambda: s.app.state.service.failure, "the load to fail", timeout_s=10)
        error = _error(httpx.get(f"{s.url}/v1/health/ready"), 503, "model_failed")
        assert "nothing" in error["message"]
        _error(_post_to(s.url), 503, "model_failed")


def test_shutdown_finishes_requests_in_flight(predictor):
    slow, engine = slowed(predictor)
    with live_server(create_app(ServeSettings(api_key=None), slow)) as s:
        engine.hold()
        thread, box = _in_thread(lambda: _post_to(s.url))
        assert engine.entered.wait(30)
        s.server.should_exit = True
        time.sleep(0.3)  # uvicorn is shutting down, the request still in the engine
        engine.release()
        thread.join()
    assert box[0].status_code == 200 and "prediction" in box[0].json()["results"][0]


def test_a_failing_engine_is_a_json_500_and_the_server_lives_on(predictor):
    class Broken:
        name = "broken"
        calls = 0

        def __call__(self, pixels):
            Broken.calls += 1
            if Broken.calls > 3:  # the warm-up passes
                raise RuntimeError("engine exploded")
            return predictor.engine(pixels)

    with live_server(
        create_app(ServeSettings(api_key=None), Predictor(predictor.meta, Broken()))
    ) as s:
        _error(_post_to(s.url), 500, "internal_error")
        assert httpx.get(f"{s.url}/v1/health/ready").status_code == 200


def test_a_refused_bomb_leaves_no_pillow_warning_in_the_log(tmp_path):
    """100M pixels: over the server's limit and Pillow's warning limit, under its error limit."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(10_000, 10_000))
    script = (
        "import sys; from pathlib import Path\n"
        "from cardamage.serve.decoding import DecodeRules, RejectedUpload, decode_upload\n"
        "from cardamage.serve.uploads import Upload\n"
        "rules = DecodeRules(32, ('png',), 40_000_000)\n"
        "try:\n"
        "    decode_upload(Upload('bomb.png', Path(sys.argv[1]).read_bytes()), rules)\n"
        "except RejectedUpload as e:\n"
        "    print(e.code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", script, str(bomb)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.stdout.strip() == "too_many_pixels", done.stderr
    assert "DecompressionBombWarning" not in done.stderr
