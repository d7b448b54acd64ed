"""One Predictor behind every entry point: images in, structured predictions out.

The backbone runs once per image for all tasks; thresholds come from the trained model
(tuned out-of-fold) unless the caller overrides them. Every prediction carries its ``Trust``:
the quality checks, the distribution check on the features the engine gave beside the scores,
and whether to abstain; scores are calibrated here, after any engine, by the model's
out-of-fold calibration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cardamage.config import QualityRules, resolve_thresholds
from cardamage.data.images import Photo, load_photo
from cardamage.errors import CardamageError
from cardamage.inference.engines import Engine, load_engine
from cardamage.inference.photo_index.fingerprint import Fingerprint
from cardamage.model.metadata import FEATURES, ModelMeta, resolve_model_dir
from cardamage.tasks import Task
from cardamage.trust.calibrators import calibrate
from cardamage.trust.distribution import DistributionCheck
from cardamage.trust.quality import check_quality
from cardamage.trust.review import Confidence, Reviewed, ReviewPolicy
from cardamage.trust.verdict import Trust

if TYPE_CHECKING:
    from cardamage.inference.claims import ClaimAssessment
    from cardamage.inference.photo_index.check import ReuseCheck

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
class Prediction(Reviewed):
    """One photo's predictions and the two questions asked of them: ``trust``, whether the
    photo is usable at all (declined, ``abstain``: no answer, only its reason); ``review``, per
    task, how sure the answer is (an answer under its task's threshold needs review)."""

    tasks: dict[str, TaskPrediction]
    trust: Trust
    review: dict[str, Confidence] = field(default_factory=dict)
    #: what the photo index keeps of it (None when the engine gives no features)
    fingerprint: Fingerprint | None = None

    @property
    def abstain(self) -> bool:
        """Declined: a bad photo, or not one of a car. Its scores stay here for evaluation;
        every output gives its reason instead of an answer."""
        return self.trust.abstain

    @property
    def abstain_reason(self) -> str | None:
        return self.trust.reason

    @property
    def confidences(self) -> dict[str, Confidence]:
        """Empty for a declined photo: there is no answer to check."""
        return {} if self.abstain else self.review

    def to_dict(self) -> dict | None:
        """Per task name, as the API and ``cardamage predict`` give them; None when declined
        (no label, no score: there is no answer)."""
        if self.abstain:
            return None
        return {name: p.to_dict() for name, p in self.tasks.items()}

    def trust_dict(self) -> dict:
        """Both questions' verdicts, as the API and the JSON outputs give them."""
        return self.trust.to_dict() | super().trust_dict()


class Predictor:
    def __init__(
        self,
        meta: ModelMeta,
        engine: Engine,
        thresholds: Thresholds | None = None,
        model_dir: Path | None = None,
        quality: QualityRules | None = None,
    ):
        self.meta = meta
        self.model_dir = model_dir
        self.engine = engine
        self.quality = quality or QualityRules()
        self.distribution = DistributionCheck.load(model_dir) if model_dir else None
        self.review = ReviewPolicy.load(model_dir) if model_dir else ReviewPolicy({}, {})
        resolved = resolve_thresholds(thresholds or {}, meta.tasks)
        self.tasks = [
            t.with_thresholds(resolved[t.name]) if t.name in resolved else t for t in meta.tasks
        ]
        self.image_size = meta.spec.image_size
        #: give each prediction its fingerprint for the photo index (a few ms a photo: only
        #: where claims are checked for reused photos)
        self.fingerprint = False

    @classmethod
    def load(
        cls,
        path: Path | str,
        engine: str = "keras",
        thresholds: Thresholds | None = None,
        quality: QualityRules | None = None,
    ) -> Predictor:
        """From a run directory or a model directory."""
        model_dir = resolve_model_dir(path)
        meta = ModelMeta.read(model_dir)
        return cls(meta, load_engine(engine, model_dir), thresholds, model_dir, quality)

    def decode(self, source: ImageSource) -> Photo:
        if isinstance(source, np.ndarray):
            from PIL import Image

            image = Image.fromarray(np.asarray(source, dtype=np.uint8)).convert("RGB")
            size = (self.image_size, self.image_size)
            pixels = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
            return Photo(pixels, image.size, Photo.from_pixels(np.asarray(image)).analysis)
        return load_photo(source, self.image_size)

    def scores(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrated per-task probabilities for a batch of decoded images (n, size, size, 3),
        and the engine's ``features`` when it gives them."""
        out = self.engine(np.asarray(pixels, dtype=np.float32))
        calibration = self.meta.calibration
        return {
            name: calibrate(calibration.get(name), value) if name != FEATURES else value
            for name, value in out.items()
        }

    def predict(self, sources: Sequence[ImageSource], batch_size: int = 32) -> list[Prediction]:
        return list(self.iter_predict(sources, batch_size))

    def iter_predict(
        self, sources: Iterable[ImageSource], batch_size: int = 32
    ) -> Iterator[Prediction]:
        for photos in self.iter_batches(sources, batch_size):
            yield from self.predict_photos(photos)

    def iter_batches(
        self, sources: Iterable[ImageSource], batch_size: int
    ) -> Iterator[list[Photo]]:
        """Decoded batches in input order; batch k+1 decodes while the caller works on batch k."""
        for decoded in iter_decoded(self.decode, sources, batch_size):
            yield [future.result() for _, future in decoded]

    def predict_photos(
        self, photos: Sequence[Photo], fingerprint: bool | None = None
    ) -> list[Prediction]:
        """``fingerprint``: with fingerprints for the photo index (default: self.fingerprint)."""
        scores = self.scores(np.stack([photo.pixels for photo in photos]))
        features = scores.get(FEATURES)
        if self.distribution is not None and features is None:
            raise CardamageError(
                f"the {self.engine.name} engine gives no features for the distribution check: "
                "export the model again"
            )
        verdicts = self.distribution.verdicts(features) if self.distribution else None
        trusts = [
            Trust(verdicts[i] if verdicts else None, check_quality(photo, self.quality))
            for i, photo in enumerate(photos)
        ]
        wanted = self.fingerprint if fingerprint is None else fingerprint
        fingerprints = [
            Fingerprint.of(photo.analysis, features[i]) if wanted and features is not None else None
            for i, photo in enumerate(photos)
        ]
        return predictions(self.tasks, scores, trusts, self.review, fingerprints)

    def assess(
        self,
        sources: Sequence[ImageSource],
        claim: str = "claim",
        rule: str | None = None,
        index: ReuseCheck | None = None,
    ) -> ClaimAssessment:
        """Several photos of one car -> one assessment (``cardamage.inference.claims``); a photo
        that cannot be decoded is left out with its error, NoEvidence when none can be used.
        ``index``: photos are searched among other claims' (``seen_before``), then recorded."""
        from cardamage.inference.claims import DEFAULT_RULE, ClaimPhoto, assess_claim

        names = [
            s if isinstance(s, str | Path) else f"photo {i + 1}" for i, s in enumerate(sources)
        ]
        decoded: list[Photo | CardamageError] = []
        for source in sources:
            try:
                decoded.append(self.decode(source))
            except CardamageError as e:
                decoded.append(e)
        good = [d for d in decoded if isinstance(d, Photo)]
        fingerprint = index is not None or None
        predictions = iter(self.predict_photos(good, fingerprint) if good else [])
        photos = [
            ClaimPhoto(str(name), error=str(d))
            if isinstance(d, CardamageError)
            else ClaimPhoto(str(name), next(predictions))
            for name, d in zip(names, decoded, strict=True)
        ]
        seen = index.check(claim, photos) if index is not None else None
        return assess_claim(claim, photos, rule or DEFAULT_RULE, seen)

    def predict_pixels(self, pixels: np.ndarray) -> list[Prediction]:
        """Pixels already at model size: the photo's own size is taken to be theirs."""
        return self.predict_photos([Photo.from_pixels(p) for p in pixels])


def predictions(
    tasks: Sequence[Task],
    scores: Mapping[str, np.ndarray],
    trusts: Sequence[Trust],
    review: ReviewPolicy,
    fingerprints: Sequence[Fingerprint | None] | None = None,
) -> list[Prediction]:
    """One Prediction per image from a batch of calibrated per-task scores, the images'
    verdicts and the review policy: the tasks' thresholds and decisions, wherever the scores
    were computed (here, or by a Ray actor); ``fingerprints`` for the photo index."""
    confidences = review.judge(tasks, scores)
    prints = fingerprints or [None] * len(trusts)
    return [
        Prediction(
            {t.name: TaskPrediction(t, scores[t.name][i]) for t in tasks}, trust, sure, prints[i]
        )
        for i, (trust, sure) in enumerate(zip(trusts, confidences, strict=True))
    ]


#: Threads decoding the next batch while the engine runs on this one (Pillow and ONNX Runtime
#: both release the GIL); memory holds two batches whatever the number of images.
DECODE_THREADS = 2


def iter_decoded(
    decode: Callable[[ImageSource], Photo], sources: Iterable, batch_size: int
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
