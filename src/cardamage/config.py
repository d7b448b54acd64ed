"""Typed, validated configuration. Unknown keys and wrong types are errors that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cardamage.errors import CardamageError
from cardamage.model.metadata import check_scales
from cardamage.tasks import Task, TaskKind, default_label_file, read_label_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    kind: TaskKind
    #: A label file (one label a line); defaults to the packaged file for the default tasks.
    labels_file: Path | None = None

    def to_task(self) -> Task:
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


class AugmentConfig(_Strict):
    """On-the-fly augmentation; only label-preserving changes (a flipped car keeps its labels)."""

    flip: bool = True
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.3, ge=0, le=1)
    zoom: float = Field(0.1, ge=0, le=0.5)
    translate: float = Field(0.05, ge=0, le=0.5)


class TrainConfig(_Strict):
    data: Path
    images: Path | None = None  # image root; defaults to the manifest's folder
    out: Path
    tasks: tuple[TaskConfig, ...] = DEFAULT_TASKS
    backbone: str = "mobilenetv2"
    weights: str = "imagenet"  # 'imagenet' (Keras download), 'none', or a weights file
    alpha: float | None = Field(None, gt=0, le=1.4)
    image_size: int = Field(224, ge=32, le=1024)
    layout: Literal["shared", "per_task"] = "shared"
    folds: int = Field(5, ge=2, le=20)
    seed: int = 42
    # head phase (backbone frozen, trained on cached features)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_decay_start: int = Field(6, ge=0)  # the original: lr * exp(-decay) per epoch after this
    lr_decay: float = Field(0.1, ge=0)
    patience: int = Field(8, ge=1)
    head_units: int = Field(256, ge=0)
    # pool a mid-level block beside the top one (see cardamage.model.backbones)
    mid_level: bool = True
    # the photo also shrunk by each factor, features of all scales joined (see
    # cardamage.model.backbones): [1, 3] at image_size 480 runs 480 and 160 px
    scales: list[int] = Field(default_factory=lambda: [1], min_length=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    # heads standardise the features (each fold's training statistics) and penalise their
    # weights by head_l2: with head_units 0 and dropout 0, L2-regularised logistic regression,
    # which on real photos beat the hidden layer (README: configs/real-photos.json)
    standardize: bool = False
    head_l2: float = Field(0.0, ge=0)
    loss_weights: dict[str, float] = Field(default_factory=dict)
    class_weights: bool = True
    # cached views per image: 1 clean + (views - 1) augmented. 2 measured as good as 4 on the
    # generated set (out-of-fold macro-F1 within 0.01 on every task) at half the extraction time
    views: int = Field(2, ge=1, le=64)
    augment: AugmentConfig = AugmentConfig()
    # train the backbone's top stage with the heads, on cached activations below it (the
    # views are its augmentation): fine-tuning where it matters most, ~20x cheaper than end to
    # end. On real photos (bench/real_data.py) over heads alone: severity macro-F1 0.479 ->
    # 0.508, damage-type mAP 0.659 -> 0.686 with seed 42, at ~25 s an epoch instead of ~1 s
    # (1,450 photos, 4 views, 2 CPU cores); with seed 7 0.471 / 0.673: within seed noise.
    tune_top: bool = False
    tune_top_learning_rate: float = Field(1e-4, gt=0)
    # fine-tuning phase (end to end through tf.data); 0 layers = off, -1 = the whole backbone
    fine_tune_layers: int = Field(0, ge=-1)
    fine_tune_epochs: int = Field(10, ge=1)
    fine_tune_learning_rate: float = Field(1e-5, gt=0)
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    tune_thresholds: bool = True
    #: "refit": heads (and fine-tuning) retrained on all images for the folds' median epochs;
    #: "best_fold": the original's choice, the best fold's model
    final_model: Literal["refit", "best_fold"] = "refit"
    cache_dir: Path | None = None
    overwrite: bool = False
    skip_bad: bool = False

    @field_validator("scales")
    @classmethod
    def _scales_fit_the_image(cls, scales: list[int], info: ValidationInfo) -> list[int]:
        if "image_size" in info.data:  # else image_size's own error is reported
            try:
                check_scales(scales, info.data["image_size"])
            except CardamageError as e:
                raise ValueError(str(e)) from None
        return scales

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names repeat: {names}")
        unknown = sorted(set(self.loss_weights) - set(names))
        if unknown:
            raise ValueError(f"loss_weights name unknown task(s) {unknown} (tasks: {names})")
        if self.tune_top and self.standardize:
            raise ValueError("standardize adapts to cached pooled features: set tune_top false")
        if self.tune_top and self.scales != [1]:
            raise ValueError("tune_top trains one scale: set scales [1] or tune_top false")
        return self

    @property
    def image_root(self) -> Path:
        return self.images if self.images is not None else self.data.parent

    def build_tasks(self) -> list[Task]:
        return [t.to_task() for t in self.tasks]


def read_tasks(config: Path | None) -> list[Task]:
    """The 'tasks' of a train config (without one, the defaults): for commands needing only them."""
    if config is None:
        return [t.to_task() for t in DEFAULT_TASKS]
    values = read_json_config(config).get("tasks", DEFAULT_TASKS)
    try:
        specs = TypeAdapter(tuple[TaskConfig, ...]).validate_python(values)
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, f"{config}: tasks")) from None
    return [t.to_task() for t in specs]


def format_validation_error(e: ValidationError, source: str) -> str:
    """One line per problem, naming the field: 'train.json: image_size: Input should be ...'."""
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {err['msg']}")
    return "; ".join(lines)


def read_json_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardamageError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise CardamageError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CardamageError(f"cannot read config {path}: {e}") from None
    if not isinstance(data, dict):
        raise CardamageError(f"{path}: a config must be a JSON object")
    return data


def load_train_config(config_file: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Config file values, then command-line flags on top (flags left unset are None)."""
    values: dict[str, Any] = read_json_config(config_file) if config_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, str(config_file or "options"))) from None


class OriginalTaskKeys(_Strict):
    """One task of the original application's config: model, label file, one threshold."""

    model_fp: Path
    label_fp: Path
    conf_threshold: float = Field(0.5, ge=0, le=1)


#: The original application's config prefixes, and the task each one means here.
ORIGINAL_TASKS = {"damage": "severity", "location": "location", "damagetype": "damage_type"}


class AppConfig(_Strict):
    """`application_config.json`: a trained model (new style) or the original's three models."""

    model: Path | None = None
    engine: str = "keras"
    #: per task: one threshold for every label, or one per label
    thresholds: dict[str, float | list[float]] = Field(default_factory=dict)
    debug: bool = False
    damage_model_fp: Path | None = None
    damage_label_fp: Path | None = None
    damage_conf_threshold: float = Field(0.5, ge=0, le=1)
    location_model_fp: Path | None = None
    location_label_fp: Path | None = None
    location_conf_threshold: float = Field(0.5, ge=0, le=1)
    damagetype_model_fp: Path | None = None
    damagetype_label_fp: Path | None = None
    damagetype_conf_threshold: float = Field(0.5, ge=0, le=1)
    #: settings of `cardamage serve` (host, port, limits, api_key); validated by the server
    serve: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_style(self) -> AppConfig:
        given = [p for p in ORIGINAL_TASKS if getattr(self, f"{p}_model_fp") is not None]
        if self.model is None and not given:
            raise ValueError("set 'model' (a run or model directory) or the original's *_model_fp")
        if self.model is not None and given:
            raise ValueError("set either 'model' or the original's *_model_fp keys, not both")
        if given:
            for prefix in ORIGINAL_TASKS:
                if getattr(self, f"{prefix}_label_fp") is None and prefix in given:
                    raise ValueError(f"'{prefix}_model_fp' needs '{prefix}_label_fp'")
        return self

    def original_tasks(self) -> dict[str, OriginalTaskKeys]:
        """Our task name -> the original's keys, for the tasks the config names."""
        found = {}
        for prefix, task in ORIGINAL_TASKS.items():
            model = getattr(self, f"{prefix}_model_fp")
            if model is not None:
                found[task] = OriginalTaskKeys(
                    model_fp=model,
                    label_fp=getattr(self, f"{prefix}_label_fp"),
                    conf_threshold=getattr(self, f"{prefix}_conf_threshold"),
                )
        return found


def load_app_config(path: Path) -> AppConfig:
    """Read the config; relative paths in it are relative to the config file, as users expect."""
    values = read_json_config(path)
    try:
        cfg = AppConfig.model_validate(values)
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, str(path))) from None
    base = Path(path).parent
    updates = {
        name: base / value
        for name, value in cfg.model_dump().items()
        if isinstance(value, Path) and not value.is_absolute()
    }
    return cfg.model_copy(update=updates)
