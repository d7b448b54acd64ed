"""The server's parts on their own: micro-batcher, settings, thresholds, file names, `run`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest_serve import encoded, noise_image

from cardamage.errors import CardamageError
from cardamage.inference.predictor import Predictor
from cardamage.serve.batcher import MicroBatcher, Overloaded
from cardamage.serve.server import run
from cardamage.serve.service import with_thresholds
from cardamage.serve.settings import ServeSettings, load_settings
from cardamage.serve.uploads import safe_filename

PIXELS = np.zeros((2, 2, 3), dtype=np.uint8)


class Recorder:
    """A predict function that records batch sizes; optionally held until ``gate`` is set."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.gate = gate
        self.fail = fail

    def __call__(self, pixels: np.ndarray) -> list[int]:
        if self.gate is not None:
            self.gate.wait(10)
        self.sizes.append(len(pixels))
        if self.fail:
            raise RuntimeError("boom")
        return list(range(len(pixels)))


def _batcher(predict, **kwargs) -> MicroBatcher:
    options = {"max_batch": 32, "max_wait_s": 5.0, "max_queue": 64} | kwargs
    return MicroBatcher(predict, **options)


def test_images_of_requests_admitted_together_run_as_one_batch():
    record = Recorder()
    batcher = _batcher(record)
    slots = [batcher.reserve() for _ in range(3)]
    futures = [f for slot in slots for f in slot.submit([PIXELS])]
    assert [f.result(5) for f in futures] == [0, 1, 2]
    assert record.sizes == [3]
    batcher.close()


def test_a_lone_request_does_not_wait_for_company():
    batcher = _batcher(Recorder(), max_wait_s=5.0)
    started = time.monotonic()
    with batcher.reserve() as slot:
        [future] = slot.submit([PIXELS])
    future.result(5)
    assert time.monotonic() - started < 1.0
    batcher.close()


def test_the_wait_for_requests_still_being_read_is_bounded():
    batcher = _batcher(Recorder(), max_wait_s=0.1)
    late = batcher.reserve()  # admitted, never submits in time
    started = time.monotonic()
    with batcher.reserve() as slot:
        [future] = slot.submit([PIXELS])
    future.result(5)
    assert 0.05 < time.monotonic() - started < 2.0
    late.__exit__(None, None, None)
    batcher.close()


def test_batches_are_at_most_max_batch():
    record = Recorder()
    batcher = _batcher(record, max_batch=4)
    with batcher.reserve() as slot:
        futures = slot.submit([PIXELS] * 10)
    assert [f.result(5) for f in futures] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert record.sizes == [4, 4, 2]
    batcher.close()


def test_a_full_queue_refuses_with_a_retry_estimate():
    gate = threading.Event()
    batcher = _batcher(Recorder(gate), max_queue=2)
    with batcher.reserve() as slot:
        slot.submit([PIXELS])
    with batcher.reserve() as slot, pytest.raises(Overloaded):
        slot.submit([PIXELS] * 2)  # admitted, but its images do not fit
    second = batcher.reserve()
    with pytest.raises(Overloaded) as refused:
        batcher.reserve()
    assert refused.value.retry_after_s >= 1
    second.__exit__(None, None, None)
    gate.set()
    batcher.close()


def test_a_reservation_given_up_frees_its_place():
    batcher = _batcher(Recorder(), max_queue=1)
    with batcher.reserve():
        pass  # e.g. the upload was refused
    with batcher.reserve() as slot:
        assert slot.submit([PIXELS])[0].result(5) == 0
    batcher.close()


def test_a_failed_batch_fails_its_futures_and_the_worker_lives_on():
    record = Recorder(fail=True)
    batcher = _batcher(record)
    with batcher.reserve() as slot:
        [future] = slot.submit([PIXELS])
    with pytest.raises(RuntimeError, match="boom"):
        future.result(5)
    record.fail = False
    with batcher.reserve() as slot:
        assert slot.submit([PIXELS])[0].result(5) == 0
    batcher.close()


def test_cancelled_images_are_skipped():
    gate = threading.Event()
    record = Recorder(gate)
    batcher = _batcher(record, max_batch=1)
    with batcher.reserve() as slot:
        _, second, third = slot.submit([PIXELS] * 3)
    time.sleep(0.1)  # the worker holds the first
    assert second.cancel()
    gate.set()
    assert third.result(5) == 0
    assert record.sizes == [1, 1]
    batcher.close()


def test_close_answers_what_is_queued_then_refuses():
    gate = threading.Event()
    batcher = _batcher(Recorder(gate))
    with batcher.reserve() as slot:
        futures = slot.submit([PIXELS] * 3)
    gate.set()
    batcher.close()
    assert [f.result(0) for f in futures] == [0, 1, 2]
    with pytest.raises(Overloaded):
        batcher.reserve()


def test_settings_defaults_are_the_safe_ones(monkeypatch):
    monkeypatch.delenv("CARDAMAGE_API_KEY", raising=False)
    settings = ServeSettings()
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert settings.api_key is None and settings.cors_origins == []
    assert settings.max_upload_bytes == 20 * 2**20 and settings.max_files == 16
    assert settings.formats == ("jpeg", "png", "webp", "bmp", "gif")


def test_the_api_key_comes_from_the_environment_unless_configured(monkeypatch):
    monkeypatch.setenv("CARDAMAGE_API_KEY", "from-env")
    assert ServeSettings().api_key.get_secret_value() == "from-env"
    assert ServeSettings(api_key="given").api_key.get_secret_value() == "given"
    monkeypatch.setenv("CARDAMAGE_API_KEY", "")
    assert ServeSettings().api_key is None


def _config(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "application_config.json"
    path.write_text(json.dumps(values))
    return path


def test_an_original_style_config_is_read(tmp_path):
    config = _config(
        tmp_path,
        {
            "model": "runs/demo",
            "engine": "keras",
            "debug": False,
            "damage_conf_threshold": 0.5,
            "damagetype_label_fp": "labels/damage_type.txt",
            "thresholds": {"location": 0.4},
            "port": 9000,
            "serve": {"host": "0.0.0.0", "max_files": 8},
        },
    )
    settings = load_settings(config, {"port": 9100, "host": None})
    assert settings.model == tmp_path / "runs/demo" and settings.port == 9100  # beside the file
    assert settings.host == "0.0.0.0" and settings.max_files == 8
    assert settings.thresholds == {"location": 0.4}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_upload": 5}, "max_upload"),
        ({"serve": {"prot": 1}}, "prot"),
        ({"port": "eighty"}, "port"),
        ({"formats": ["jpeg", "heic"]}, "heic"),
        ({"max_files": 32, "max_queue": 16}, "max_queue"),
        ({"thresholds": {"location": 1.5}}, "thresholds"),
        ({"serve": [1]}, "serve"),
    ],
)
def test_config_mistakes_name_the_field(tmp_path, values, message):
    with pytest.raises(CardamageError, match=message):
        load_settings(_config(tmp_path, values))


def test_format_names_are_normalised():
    assert ServeSettings(formats=["JPG", "png", "jpeg"]).formats == ("jpeg", "png")


def test_threshold_overrides_apply_per_task(tiny_model_dir):
    predictor = Predictor.load(tiny_model_dir)
    location = next(t for t in predictor.tasks if t.name == "location")
    changed = with_thresholds(predictor, {"location": 0.3})
    assert next(t for t in changed.tasks if t.name == "location").thresholds == (0.3,) * len(
        location.labels
    )
    with pytest.raises(CardamageError, match="unknown task"):
        with_thresholds(predictor, {"colour": 0.3})
    with pytest.raises(CardamageError, match="thresholds"):
        with_thresholds(predictor, {"location": [0.3]})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"car.jpg", "car.jpg"),
        (b"../../etc/passwd", "passwd"),
        (b"C:\\photos\\car.jpg", "car.jpg"),
        (b"a\x00b\x1b[31m.jpg", "ab[31m.jpg"),
        ("caf\u00e9 \u202e.jpg".encode(), "caf\u00e9 .jpg"),
        (b"", "file-3"),
        (None, "file-3"),
        (b"/", "file-3"),
        (b"x" * 500, "x" * 200),
    ],
)
def test_safe_filename(raw, expected):
    assert safe_filename(raw, 3) == expected


def test_run_without_a_model_is_a_one_line_error(tmp_path):
    with pytest.raises(CardamageError, match="no model"):
        run(config=_config(tmp_path, {"debug": True}))
    with pytest.raises(CardamageError, match="no trained model"):
        run(model=tmp_path / "missing")


@pytest.mark.slow
def test_run_serves_from_a_config_and_stops_cleanly_on_sigterm(tmp_path, tiny_model_dir):
    """The CLI's path end to end, in its own process: config file, uvicorn, SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _config(tmp_path, {"model": str(tiny_model_dir), "debug": False})
    env = os.environ | {"CARDAMAGE_API_KEY": "k"}
    serve = ["serve", "--config", str(config), "--port", str(port)]
    command = [sys.executable, "-m", "cardamage", *serve]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v1/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        files = [("files", ("a.jpg", encoded(noise_image())))]
        response = httpx.post(f"{url}/v1/predict", files=files, headers={"X-API-Key": "k"})
        assert response.status_code == 200, response.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    # after uvicorn's graceful shutdown the CLI exits 0: SIGTERM is a normal way to stop it
    assert proc.returncode == 0, stderr.decode()
    assert b"Finished server process" in stderr


def test_waiting_explanations_are_bounded_and_hold_no_thread(tiny_model_dir, monkeypatch):
    """Past its bound the explainer refuses at once (503) instead of queueing on threads."""
    import anyio

    from cardamage.serve.batcher import Overloaded
    from cardamage.serve.explain import Explainer

    release = threading.Event()
    monkeypatch.setattr(
        Explainer, "_explain", lambda self, data, name, prediction: release.wait(10) and {}
    )
    explainer = Explainer(Predictor.load(tiny_model_dir), max_waiting=2)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            await explainer.explain(b"", "a.jpg", {})
            outcomes.append("done")
        except Overloaded:
            outcomes.append("refused")

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(4):
                tasks.start_soon(one)
            await anyio.sleep(0.2)
            assert outcomes == ["refused", "refused"]  # two wait, two are turned away at once
            release.set()

    anyio.run(main)
    assert sorted(outcomes) == ["done", "done", "refused", "refused"]
