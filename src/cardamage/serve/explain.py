"""Heatmaps on request, through ``cardamage.inference.explain`` where that module is installed.

The module imports TensorFlow, so it is found at start-up but imported on the first request
that asks for heatmaps: a server that never explains (an ONNX one) never loads it. Explaining
runs the model again with gradients, so calls are serialised: a burst of explain requests
queues instead of multiplying the memory one explanation needs. The queue waits on an async
lock, holding no worker thread, and is bounded: past ``MAX_WAITING`` the API answers 503, so
heatmap requests never starve ordinary predictions of threads.
"""

from __future__ import annotations

import importlib
import importlib.util

import anyio
import numpy as np
from starlette.concurrency import run_in_threadpool

from cardamage.data.images import load_image
from cardamage.inference.predictor import Predictor
from cardamage.serve.batcher import Overloaded

EXPLAIN_MODULE = "cardamage.inference.explain"
#: Side of the square photo the heatmap is drawn on. The model sees the whole frame squashed
#: to a square, so the page stretches this picture back to the photo's shape; above the model
#: size so the photo under the heatmap stays legible.
OVERLAY_SIZE = 384
#: Explanations waiting for the model at most; more answer 503 with Retry-After.
MAX_WAITING = 8


class Explainer:
    """``await explainer.explain(data, name, prediction) -> {task: base64 PNG of the photo with
    heatmap}`` for each task of the prediction that found something (``mapped_tasks``)."""

    def __init__(self, predictor: Predictor, max_waiting: int = MAX_WAITING) -> None:
        self._predictor = predictor
        self._size = max(OVERLAY_SIZE, predictor.image_size)
        self._lock = anyio.Lock()
        self._waiting = 0
        self._max_waiting = max_waiting

    async def explain(self, data: bytes, name: str, prediction: dict) -> dict[str, str]:
        """For an upload that already decoded once (so its size and format are acceptable)."""
        if self._waiting >= self._max_waiting:
            raise Overloaded(retry_after_s=self._waiting)  # about a second per explanation
        self._waiting += 1
        try:
            async with self._lock:
                return await run_in_threadpool(self._explain, data, name, prediction)
        finally:
            self._waiting -= 1

    def _explain(self, data: bytes, name: str, prediction: dict) -> dict[str, str]:
        pixels = load_image(data, self._size, name=name)
        return explain_pixels(self._predictor, pixels, prediction)


def explain_pixels(predictor: Predictor, pixels: np.ndarray, prediction: dict) -> dict[str, str]:
    """The one call into the explain module: ``explain_image(predictor, uint8 (h, w, 3), the
    tasks worth a map)`` for the photo's ``Prediction.to_dict()``."""
    module = importlib.import_module(EXPLAIN_MODULE)
    return module.explain_image(predictor, pixels, module.mapped_tasks(prediction))


def load_explainer(predictor: Predictor) -> Explainer | None:
    """An explainer, or None where this installation has no heatmaps (the API answers 501)."""
    return Explainer(predictor) if importlib.util.find_spec(EXPLAIN_MODULE) else None
