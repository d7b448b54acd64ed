"""Ctrl-C during training stops at the next batch, after the files already finished.

Python raises KeyboardInterrupt wherever the main thread happens to be, and TensorFlow runs a
lot of finalizers: an interrupt raised inside one is printed as "Exception ignored" and lost,
so training would carry on. The handler only records the request; training checks it at
safe points (every batch, every fold) and raises there. A second Ctrl-C raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import keras

_requested = threading.Event()


def _handler(signum: int, frame: object) -> None:
    if _requested.is_set():
        raise KeyboardInterrupt
    _requested.set()


@contextlib.contextmanager
def stop_on_ctrl_c() -> Iterator[None]:
    """Within the block, Ctrl-C asks for a clean stop (only from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = signal.signal(signal.SIGINT, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()


def check() -> None:
    """Raise KeyboardInterrupt here if Ctrl-C was pressed: a point where stopping is safe."""
    if _requested.is_set():
        raise KeyboardInterrupt


class CheckInterrupt(keras.callbacks.Callback):
    """Stops model.fit at the batch after a Ctrl-C."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        check()

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        check()
