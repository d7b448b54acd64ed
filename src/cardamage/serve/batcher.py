"""Micro-batching: images of concurrent requests share one backbone pass in one worker thread.

One thread owns the model, so it is shared safely without locks around inference. A batch closes
when it is full (``max_batch``), or when its oldest image has waited ``max_wait_s``, or at once
when no admitted request is still being read or decoded: waiting is only worth it when more
images are known to be on their way, so a lone client pays no batching delay.

The load (images queued or running, plus requests admitted but not yet submitted) is bounded by
``max_queue``; past it, ``reserve`` raises ``Overloaded`` and the API answers 503 rather than
letting memory grow.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from cardamage.data.images import Photo

log = logging.getLogger(__name__)

T = TypeVar("T")


class Overloaded(Exception):
    """No room in the queue; ``retry_after_s`` estimates when there will be."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"server busy: retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)
class _Item(Generic[T]):
    photo: Photo
    enqueued: float
    future: Future[T] = field(default_factory=Future)


class MicroBatcher(Generic[T]):
    """Queue single images, run them in batches through ``predict``, resolve one future each."""

    def __init__(
        self,
        predict: Callable[[list[Photo]], Sequence[T]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
    ) -> None:
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._cond = threading.Condition()
        self._queue: deque[_Item[T]] = deque()
        self._reserved = 0  # admitted requests still being read or decoded
        self._load = 0  # queued + running images + reserved requests
        self._seconds_per_image = 0.0  # of the last batch: for Retry-After
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="cardamage-batcher", daemon=True)
        self._thread.start()

    @property
    def load(self) -> int:
        """Images queued or running plus requests admitted: what ``max_queue`` bounds."""
        with self._cond:
            return self._load

    def reserve(self) -> Reservation[T]:
        """Admit one request before its body is read, or raise Overloaded."""
        with self._cond:
            if self._closed or self._load >= self.max_queue:
                raise Overloaded(self._retry_after())
            self._reserved += 1
            self._load += 1
        return Reservation(self)

    def close(self, timeout_s: float = 30.0) -> None:
        """Refuse new work, finish what is queued, stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _submit(self, images: Sequence[Photo]) -> list[Future[T]]:
        """Turn a reservation into queued images (for Reservation.submit)."""
        with self._cond:
            self._reserved -= 1
            self._load -= 1
            if self._closed or self._load + len(images) > self.max_queue:
                self._cond.notify_all()
                raise Overloaded(self._retry_after())
            now = time.monotonic()
            items = [_Item(photo, now) for photo in images]
            self._queue.extend(items)
            self._load += len(items)
            self._cond.notify_all()
        return [item.future for item in items]

    def _release(self) -> None:
        """Drop a reservation that submitted nothing; the worker may stop waiting for it."""
        with self._cond:
            self._reserved -= 1
            self._load -= 1
            self._cond.notify_all()

    def _retry_after(self) -> int:
        """Seconds to work off the current load at the last batch's speed (at least 1)."""
        return max(1, math.ceil(self._load * self._seconds_per_image))

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:  # empty when every image taken was cancelled
                self._execute(batch)

    def _next_batch(self) -> list[_Item[T]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].enqueued + self.max_wait_s
            while len(self._queue) < self.max_batch and self._reserved and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            taken = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            live = [item for item in taken if item.future.set_running_or_notify_cancel()]
            self._load -= len(taken) - len(live)
            return live

    def _execute(self, batch: list[_Item[T]]) -> None:
        started = time.perf_counter()
        try:
            results = self._predict([item.photo for item in batch])
        except Exception as e:  # the requests get the error; the worker lives on
            log.exception("batch of %d images failed", len(batch))
            for item in batch:
                item.future.set_exception(e)
        else:
            for item, result in zip(batch, results, strict=True):
                item.future.set_result(result)
        finally:
            with self._cond:
                self._load -= len(batch)
                self._seconds_per_image = (time.perf_counter() - started) / len(batch)


class Reservation(Generic[T]):
    """A place in the queue held while a request is read; a context manager that frees it."""

    def __init__(self, batcher: MicroBatcher[T]) -> None:
        self._batcher = batcher
        self._open = True

    def submit(self, images: Sequence[Photo]) -> list[Future[T]]:
        """Queue the request's images (one future each), or raise Overloaded."""
        self._open = False
        return self._batcher._submit(images)

    def __enter__(self) -> Reservation[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open:
            self._open = False
            self._batcher._release()
