"""One Predictor behind every entry point: images in, structured predictions out.

The backbone runs once per image for all tasks; thresholds come from the trained model
(tuned out-of-fold) unless the caller overrides them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from cardamage.config import resolve_thresholds
from cardamage.data.images import load_image
from cardamage.inference.engines import Engine, load_engine
from cardamage.model.metadata import ModelMeta, resolve_model_dir
from cardamage.tasks import Task

ImageSource = str | Path | bytes | np.ndarray
Thresholds = Mapping[str, float | Sequence[float]]


@dataclass(frozen=True)
class TaskPrediction:
    task: Task
    scores: np.ndarray  # one probability per label, in label order

    @property
    def labels(self) -> list[tuple[str, float]]:
        """The predicted labels with their scores: the top class (multiclass: never empty,
        unlike the original's thresholded softmax) or every label over its threshold."""
        if self.task.multiclass:
            i = int(np.argmax(self.scores))
            return [(self.task.labels[i], float(self.scores[i]))]
        pairs = zip(self.task.labels, self.scores, self.task.thresholds, strict=True)
        return [(label, float(s)) for label, s, t in pairs if s >= t]

    def to_dict(self) -> dict:
        labels = self.task.labels
        scores = {label: round(float(s), 6) for label, s in zip(labels, self.scores, strict=True)}
        if self.task.multiclass:
            label, score = self.labels[0]
            return {
                "kind": "multiclass",
                "label": label,
                "score": round(score, 6),
                "scores": scores,
            }
        return {
            "kind": "multilabel",
            "labels": [label for label, _ in self.labels],
            "scores": scores,
            "thresholds": dict(zip(labels, self.task.thresholds, strict=True)),
        }


@dataclass(frozen=True)
class Prediction:
    tasks: dict[str, TaskPrediction]

    def to_dict(self) -> dict:
        return {name: p.to_dict() for name, p in self.tasks.items()}


class Predictor:
    def __init__(
        self,
        meta: ModelMeta,
        engine: Engine,
        thresholds: Thresholds | None = None,
        model_dir: Path | None = None,
    ):
        self.meta = meta
        self.model_dir = model_dir
        self.engine = engine
        resolved = resolve_thresholds(thresholds or {}, meta.tasks)
        self.tasks = [
            t.with_thresholds(resolved[t.name]) if t.name in resolved else t for t in meta.tasks
        ]
        self.image_size = meta.spec.image_size

    @classmethod
    def load(
        cls, path: Path | str, engine: str = "keras", thresholds: Thresholds | None = None
    ) -> Predictor:
        """From a run directory or a model directory."""
        model_dir = resolve_model_dir(path)
        meta = ModelMeta.read(model_dir)
        return cls(meta, load_engine(engine, model_dir), thresholds, model_dir)

    def decode(self, source: ImageSource) -> np.ndarray:
        if isinstance(source, np.ndarray):
            from PIL import Image

            image = Image.fromarray(np.asarray(source, dtype=np.uint8)).convert("RGB")
            size = (self.image_size, self.image_size)
            return np.asarray(image.resize(size, Image.Resampling.BILINEAR))
        return load_image(source, self.image_size)

    def scores(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Raw per-task probabilities for a batch of decoded images (n, size, size, 3)."""
        return self.engine(np.asarray(pixels, dtype=np.float32))

    def predict(self, sources: Sequence[ImageSource], batch_size: int = 32) -> list[Prediction]:
        return list(self.iter_predict(sources, batch_size))

    def iter_predict(
        self, sources: Iterable[ImageSource], batch_size: int = 32
    ) -> Iterator[Prediction]:
        for pixels in self.iter_batches(sources, batch_size):
            yield from self.predict_pixels(pixels)

    def iter_batches(self, sources: Iterable[ImageSource], batch_size: int) -> Iterator[np.ndarray]:
        """Decoded batches in input order; batch k+1 decodes while the caller works on batch k."""
        for decoded in iter_decoded(self.decode, sources, batch_size):
            yield np.stack([future.result() for _, future in decoded])

    def predict_pixels(self, pixels: np.ndarray) -> list[Prediction]:
        return predictions(self.tasks, self.scores(pixels))


def predictions(tasks: Sequence[Task], scores: Mapping[str, np.ndarray]) -> list[Prediction]:
    """One Prediction per image from a batch of raw per-task scores: the tasks' thresholds and
    decisions, wherever the scores were computed (here, or by a Ray actor)."""
    n = len(next(iter(scores.values())))
    return [
        Prediction({t.name: TaskPrediction(t, scores[t.name][i]) for t in tasks}) for i in range(n)
    ]


#: Threads decoding the next batch while the engine runs on this one (Pillow and ONNX Runtime
#: both release the GIL); memory holds two batches whatever the number of images.
DECODE_THREADS = 2


def iter_decoded(
    decode: Callable[[ImageSource], np.ndarray], sources: Iterable, batch_size: int
) -> Iterator[list[tuple[ImageSource, Future]]]:
    """Batches of (source, decode future) in input order, the next batch already decoding; a
    future holds its decoding error, so callers choose to raise it or report it per image."""
    it = iter(sources)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        ahead = [(s, pool.submit(decode, s)) for s in islice(it, batch_size)]
        while ahead:
            current = ahead
            ahead = [(s, pool.submit(decode, s)) for s in islice(it, batch_size)]
            yield current
