"""The API's response shapes: typed, so the OpenAPI document says exactly what clients get.

These shapes are the contract with API clients; change them only by adding optional fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. 'not_an_image'.")
    message: str = Field(description="What went wrong, for a person.")


class RejectedFile(BaseModel):
    filename: str
    error: ErrorDetail


class ErrorBody(ErrorDetail):
    files: list[RejectedFile] | None = Field(
        None, description="Per-file reasons, when no file of the request could be used."
    )


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error: ErrorBody


class ModelRef(BaseModel):
    id: str = Field(description="Backbone and input size, e.g. 'mobilenet-160px'.")
    version: str = Field(description="Digest of the model's metadata and thresholds.")


class MulticlassPrediction(BaseModel):
    kind: Literal["multiclass"]
    label: str = Field(description="The top class.")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(description="Every class's probability.")


class MultilabelPrediction(BaseModel):
    kind: Literal["multilabel"]
    labels: list[str] = Field(description="Labels whose score reaches their threshold.")
    scores: dict[str, float] = Field(description="Every label's probability.")
    thresholds: dict[str, float]


TaskPrediction = Annotated[MulticlassPrediction | MultilabelPrediction, Field(discriminator="kind")]


class Why(BaseModel):
    """Only on a check that failed (an answer that is unsure): why, twice."""

    message: str | None = Field(
        None, description="For a person, e.g. 'too dark to judge: retake in daylight'."
    )
    detail: str | None = Field(
        None, description="The figures, for engineers, e.g. 'brightness 5, under 8'."
    )


class QualityCheck(Why):
    name: str
    value: float = Field(description="What was measured on the photo.")
    threshold: float
    passed: bool


class InDistribution(Why):
    score: float = Field(
        description="Typicality: the share of genuine training photos (scored out of fold) "
        "that looked less like the training set than this photo."
    )
    threshold: float = Field(description="The typicality a photo needs to pass.")
    passed: bool


class TaskConfidence(Why):
    confidence: float = Field(
        description="The calibrated probability of the task's decision (multiclass: the top "
        "class's score; multilabel: the least certain label's)."
    )
    threshold: float | None = Field(
        description="The confidence an answer needs to stand without review (none: no policy)."
    )
    sure: bool


class Review(BaseModel):
    """The second trust question, for a photo or a claim: how sure is each decision."""

    needs_review: bool = Field(
        False,
        description="Answered, but a decision's confidence is under its task's threshold: a "
        "person should check it.",
    )
    review_reason: str | None = Field(None, description="Which decision to check, for a person.")
    confidence: dict[str, TaskConfidence] = Field(
        default_factory=dict,
        description="Per task, the confidence in its decision against the threshold (empty when "
        "declined or not assessed).",
    )


class Usability(BaseModel):
    """The first trust question: is this a usable photo of a car."""

    abstain: bool = Field(
        description="Declined: the photo is not usable (a quality check failed, or it does not "
        "look like a photo of a car). It then has no prediction, only the reason."
    )
    reason: str | None = Field(None, description="Why it was declined, for a person.")
    detail: str | None = Field(None, description="The figures behind the reason, for engineers.")
    in_distribution: InDistribution | None = Field(
        None, description="Absent for models trained before the check existed."
    )
    quality: dict[str, QualityCheck] = Field(description="Each check by name.")


class TrustReport(Review, Usability):  # Pydantic puts the last base's fields first
    """Both questions, in turn: is the photo usable, and how sure is each answer."""


class SeenMatch(BaseModel):
    claim: str = Field(description="The other claim the photo was found in.")
    photo: str = Field(description="That claim's photo.")
    similarity: float = Field(description="Cosine of the two photos' model features (1: same).")
    kind: Literal["copy", "near-copy"] = Field(
        description="copy: perceptual hashes match (resized, recompressed, mirrored); "
        "near-copy: features match (cropped, colour-shifted)."
    )
    added: str = Field(description="When that photo was indexed (ISO 8601, UTC).")


class PredictedFile(BaseModel):
    filename: str
    prediction: dict[str, TaskPrediction] | None = Field(
        None, description="Per task name; absent when the photo was declined (trust.abstain)."
    )
    trust: TrustReport
    seen_before: list[SeenMatch] | None = Field(
        None, description="Claims only, with a photo index: this photo in other claims."
    )
    explanation: dict[str, str] | None = Field(
        None,
        description="Per task: a base64 PNG heatmap of where the model looked (explain); "
        "a multilabel task with no label over its threshold has none (nothing to map).",
    )


class PredictResponse(BaseModel):
    model: ModelRef
    results: list[PredictedFile | RejectedFile] = Field(description="One per file, in order.")
    elapsed_ms: float = Field(description="Time the server spent on the request.")


class TaskInfo(BaseModel):
    name: str
    kind: Literal["multiclass", "multilabel"]
    labels: list[str]
    thresholds: dict[str, float] | None = Field(
        None,
        description="Per label (multilabel tasks only; a multiclass task takes the top class).",
    )
    display_names: dict[str, str] = Field(
        default_factory=dict,
        description="Each label as a person reads it (e.g. 'whole': 'No damage'); the API "
        "keeps the labels themselves.",
    )


class TrainingSummary(BaseModel):
    """What the model's training recorded; empty for models without that record."""

    trained_on: int | None = Field(None, description="Images in the training set.")
    fold: int | None = Field(None, description="The cross-validation fold the model comes from.")
    out_of_fold: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Per task: out-of-fold metrics (accuracy, macro_f1...)."
    )


class Limits(BaseModel):
    max_upload_mb: float
    max_files: int
    max_pixels: int
    formats: list[str]


class ModelInfo(BaseModel):
    model: ModelRef
    engine: str
    backbone: str
    input_size: int
    tasks: list[TaskInfo]
    training: TrainingSummary
    explain: bool = Field(description="Whether heatmaps can be requested (explain=true).")
    limits: Limits


class Health(BaseModel):
    status: Literal["live", "ready"]


class Evidence(BaseModel):
    photo: str = Field(description="The file name (a repeated name gets ' (2)', ' (3)').")
    score: float = Field(description="That photo's support for the label.")


class ClaimMulticlass(BaseModel):
    kind: Literal["multiclass"]
    label: str = Field(description="The highest level the photos make more likely than not.")
    score: float = Field(description="Its combined probability of being exactly that level.")
    confidence: float = Field(
        description="The decision's probability: that the car is at least that damaged (no "
        "damage: that it is not damaged); the one number to show beside the label."
    )
    scores: dict[str, float] = Field(description="The combined distribution over labels.")
    at_least: dict[str, float] = Field(
        description="Per damaged level: the combined probability the car is at least that."
    )
    evidence: dict[str, list[Evidence]] = Field(description="Supporting photos, strongest first.")


class ClaimMultilabel(BaseModel):
    kind: Literal["multilabel"]
    labels: list[str] = Field(description="Labels any photo found.")
    scores: dict[str, float] = Field(description="Each label's best photo score.")
    evidence: dict[str, list[Evidence]] = Field(description="Per label found: the photos.")


ClaimTask = Annotated[ClaimMulticlass | ClaimMultilabel, Field(discriminator="kind")]


class LeftOut(BaseModel):
    photo: str
    reason: str


class SeenBefore(BaseModel):
    message: str | None = Field(
        None, description="For a person: 'photos found in claim X: ...'; none when none were."
    )
    claims: list[str] = Field(description="The other claims this claim's photos were found in.")
    photos: dict[str, list[SeenMatch]] = Field(description="Per photo with matches.")
    warning: str | None = Field(
        None, description="Why the photos could not be checked (the index is unavailable)."
    )


class ClaimHeader(BaseModel):
    """What a claim's answer starts with: which claim, and its photos found in other claims."""

    claim: str
    seen_before: SeenBefore | None = Field(
        None,
        description="Photos found in other claims; present when the server has a photo index "
        "and the request names its claim.",
    )


class ClaimAssessment(Review, ClaimHeader):  # Pydantic puts the last base's fields first
    """A claim's decisions are held to the review thresholds its photos are held to, on the
    claim's own confidence: multiclass, the decision's `confidence`; multilabel, the least
    certain label's, from the best photo scores."""

    rule: str = Field(description="How the photos' severities were combined, e.g. 'max'.")
    assessment: dict[str, ClaimTask] | None = Field(
        None, description="Per task name; absent when no photo could be used (see `reason`)."
    )
    photos: list[str] = Field(description="The photos used, those that drove the decision first.")
    left_out: list[LeftOut] = Field(description="Photos not used (unreadable, declined).")
    n_photos: int = Field(description="Photos sent.")
    partial: str | None = Field(
        None,
        description="'from 1 of 2 photos' when photos were left out: show it with the verdict.",
    )
    reason: str | None = Field(
        None,
        description="Only without an assessment: why, once (each photo's own reason is in "
        "`results`).",
    )


class ClaimResponse(BaseModel):
    model: ModelRef
    claim: ClaimAssessment
    results: list[PredictedFile | RejectedFile] = Field(
        description="Each photo's own prediction (or error), in upload order."
    )
    elapsed_ms: float
