"""Helpers for the serve tests: a real uvicorn server on loopback, photos, slow engines.

A plain module (pytest does not collect it as a conftest): the test files import what they use.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI
from PIL import Image, ImageDraw

from cardamage.inference.predictor import Predictor

STARTUP_TIMEOUT_S = 60


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    app: FastAPI


@contextlib.contextmanager
def live_server(app: FastAPI, wait_ready: bool = True) -> Iterator[LiveServer]:
    """Run ``app`` under uvicorn on 127.0.0.1 (a free port) in a thread until the block ends.

    The socket is bound here and handed to uvicorn, so no other process can take the port
    between choosing and binding it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "the server to start")
        if wait_ready:
            wait_for(lambda: _is_ready(url), "the model to be ready")
        yield LiveServer(url, server, app)
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        sock.close()


def _is_ready(url: str) -> bool:
    return httpx.get(f"{url}/v1/health/ready").status_code == 200


def encoded(image: Image.Image, image_format: str = "JPEG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def noise_image(width: int = 80, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def car_photo(width: int = 640, height: int = 480) -> Image.Image:
    """A drawn car on a street, so screenshots show something photo-like."""
    sky = np.linspace(200, 120, height)[:, None, None] * np.array([0.75, 0.85, 1.0])
    image = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    w, h = width, height
    draw.rectangle((0, int(h * 0.72), w, h), fill=(70, 72, 78))
    draw.rounded_rectangle((w * 0.12, h * 0.45, w * 0.88, h * 0.72), 30, fill=(178, 34, 40))
    draw.polygon(
        [(w * 0.28, h * 0.46), (w * 0.38, h * 0.28), (w * 0.64, h * 0.28), (w * 0.76, h * 0.46)],
        fill=(160, 30, 36),
    )
    draw.polygon(
        [(w * 0.33, h * 0.45), (w * 0.41, h * 0.32), (w * 0.62, h * 0.32), (w * 0.7, h * 0.45)],
        fill=(170, 205, 230),
    )
    for cx in (w * 0.27, w * 0.73):
        draw.ellipse((cx - h * 0.1, h * 0.62, cx + h * 0.1, h * 0.82), fill=(25, 25, 28))
        draw.ellipse((cx - h * 0.05, h * 0.67, cx + h * 0.05, h * 0.77), fill=(150, 150, 155))
    draw.line((w * 0.5, h * 0.5, w * 0.56, h * 0.6, w * 0.52, h * 0.66), fill=(60, 20, 20), width=5)
    return image


class SlowEngine:
    """An engine that can be held: each batch waits while held, then takes ``delay_s``."""

    def __init__(self, engine, delay_s: float = 0.0) -> None:
        self.engine = engine
        self.name = f"slow-{engine.name}"
        self.delay_s = delay_s
        self.entered = threading.Event()  # a batch reached the engine
        self.gate = threading.Event()
        self.gate.set()
        self.batch_sizes: list[int] = []

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(STARTUP_TIMEOUT_S)
        time.sleep(self.delay_s)
        self.batch_sizes.append(len(pixels))
        return self.engine(pixels)


def slowed(predictor: Predictor, delay_s: float = 0.0) -> tuple[Predictor, SlowEngine]:
    """The same model behind a SlowEngine."""
    engine = SlowEngine(predictor.engine, delay_s)
    return Predictor(predictor.meta, engine, model_dir=predictor.model_dir), engine


def wait_for(condition, what: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s} s for {what}")
        time.sleep(0.02)
