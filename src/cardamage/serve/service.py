"""The one model every request shares: loaded and warmed in the background, then batched.

Loading runs beside the server so `/v1/health/live` answers at once and `/v1/health/ready` turns
ready only after a warm-up: a load balancer then never sends traffic to a cold model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from cardamage.errors import CardamageError
from cardamage.inference.photo_index.check import ReuseCheck
from cardamage.inference.photo_index.fingerprint import feature_space
from cardamage.inference.predictor import Prediction, Predictor
from cardamage.serve.batcher import MicroBatcher
from cardamage.serve.decoding import DecodeRules
from cardamage.serve.explain import Explainer, load_explainer
from cardamage.serve.schemas import ModelRef
from cardamage.serve.settings import ServeSettings
from cardamage.serve.uploads import UploadLimits

log = logging.getLogger(__name__)

NO_MODEL = "no model to serve: give a run or model directory (--model, or 'model' in the config)"


class ModelService:
    """Predictor, batcher and explainer behind the API; ``ready`` once all three are set."""

    def __init__(self, settings: ServeSettings, predictor: Predictor | None = None) -> None:
        if predictor is None and settings.model is None:
            raise CardamageError(NO_MODEL)
        self.settings = settings
        self.limits = UploadLimits(settings.max_upload_bytes, settings.max_files)
        self.failure: str | None = None
        self._given = predictor
        self._ready = threading.Event()
        # set by _load before _ready; read only once ready
        self.predictor: Predictor
        self.batcher: MicroBatcher[Prediction]
        self.explainer: Explainer | None
        self.model_ref: ModelRef
        self.rules: DecodeRules
        self.reuse: ReuseCheck | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        threading.Thread(target=self._load, name="cardamage-model-load", daemon=True).start()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        return self._ready.wait(timeout_s)

    def close(self) -> None:
        if self.ready:
            self.batcher.close()
        if self.reuse is not None:
            self.reuse.close()

    def _load(self) -> None:
        settings = self.settings
        try:
            predictor = self._given or load_predictor(settings)
            warm_up(predictor, settings.max_batch)
        except Exception as e:  # any failure must show in /health/ready, not kill a thread
            self.failure = str(e) or type(e).__name__
            log.exception("the model could not be loaded")
            return
        self.predictor = predictor
        self.model_ref = model_ref(predictor)
        self.rules = DecodeRules(predictor.image_size, settings.formats, settings.max_pixels)
        self.explainer = load_explainer(predictor)
        if settings.photo_index:  # opened at the first claim: a database down now may be up then
            self.reuse = ReuseCheck(settings.photo_index, feature_space(predictor.meta))
            predictor.fingerprint = True
        self.batcher = MicroBatcher(
            predictor.predict_photos,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
        )
        self._ready.set()
        log.info("model %s ready", self.model_ref.id)


def load_predictor(settings: ServeSettings) -> Predictor:
    """The configured model with the configured thresholds (a given Predictor is used as is)."""
    if settings.model is None:
        raise CardamageError(NO_MODEL)
    predictor = Predictor.load(settings.model, settings.engine, quality=settings.quality)
    return with_thresholds(predictor, settings.thresholds)


def with_thresholds(
    predictor: Predictor, overrides: Mapping[str, float | Sequence[float]]
) -> Predictor:
    """The predictor with per-task thresholds replaced (checked as the Predictor checks them)."""
    if not overrides:
        return predictor
    current = {t.name: list(t.thresholds) for t in predictor.tasks}
    return Predictor(
        predictor.meta,
        predictor.engine,
        {**current, **overrides},
        predictor.model_dir,
        predictor.quality,
    )


def warm_up(predictor: Predictor, max_batch: int) -> None:
    """Run dummy batches of 1, 2 and max_batch images.

    Keras traces a new graph for each of the first two batch shapes before it relaxes the batch
    dimension (about half a second each), and the first large batch allocates its buffers: all
    of that happens here instead of inside the first users' requests.
    """
    size = predictor.image_size
    for n in sorted({1, 2, max_batch}):
        predictor.predict_pixels(np.zeros((n, size, size, 3), dtype=np.uint8))


def model_ref(predictor: Predictor) -> ModelRef:
    """id: backbone and input size; version: a digest of the metadata (spec, tasks with their
    thresholds, training record), which changes with every retraining or threshold override."""
    spec = predictor.meta.spec
    described = {
        "spec": vars(spec),
        "tasks": [t.to_dict() for t in predictor.tasks],
        "info": predictor.meta.info,
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    return ModelRef(id=f"{spec.backbone}-{spec.image_size}px", version=digest.hexdigest()[:12])
