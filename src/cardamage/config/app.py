"""`application_config.json` (main.py, `predict --config`, `serve`): a trained model or the
original's three, thresholds, quality rules and the server's section."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from cardamage.config.base import StrictModel, deep_merge, format_validation_error, read_json_config
from cardamage.config.serve import ServeConfig
from cardamage.config.thresholds import Thresholds
from cardamage.errors import CardamageError


class OriginalTaskKeys(StrictModel):
    """One task of the original application's config: model, label file, one threshold."""

    model_fp: Path
    label_fp: Path
    conf_threshold: float = Field(0.5, ge=0, le=1)


#: The original application's config prefixes, and the task each one means here.
ORIGINAL_TASKS = {"damage": "severity", "location": "location", "damagetype": "damage_type"}


class QualityRules(StrictModel):
    """Thresholds of the checks: a photo fails where a model's answers stop carrying
    information, not where a photo merely looks worse (bench/trust.py, docs/benchmarks/trust.md).
    Measured at 224 px: lensor-coco's real photos have brightness 42-214, contrast from 9.4 and
    sharpness from 5 (close-ups of smooth paint), the generator's from 43, 23 and 23. A
    MobileNetV2 trained on them kept telling severities apart on its held-out photos strongly
    blurred, darkened or flattened (median sharpness 19, brightness 25, contrast 17; balanced
    accuracy 0.44-0.50 against 0.50 clean), and fell to chance (0.25-0.31, the commonest class
    for nearly every photo) only past judging: median sharpness 1.0, brightness 0.8 or contrast
    2.8. The thresholds sit between, below what any genuine photo measured."""

    min_side: int = Field(64, ge=1, description="Shorter side of the photo as given, in px.")
    min_brightness: float = Field(8.0, ge=0, le=255, description="Mean grey level, 0-255.")
    max_brightness: float = Field(235.0, ge=0, le=255, description="Mean grey level, 0-255.")
    min_contrast: float = Field(4.0, ge=0, description="Standard deviation of the grey levels.")
    min_sharpness: float = Field(
        2.0, ge=0, description="Variance of the Laplacian of the grey image at 224 px."
    )


class AppConfig(StrictModel):
    """`application_config.json`, for main.py, `predict --config` and `serve`: a trained model
    (new style) or the original's three models, and the server's `serve` section."""

    model: Path | None = None
    engine: str = "keras"
    thresholds: Thresholds = Field(default_factory=dict)
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
    serve: ServeConfig = Field(default_factory=ServeConfig)
    #: when a photo is too poor to answer for (every model, every engine)
    quality: QualityRules = Field(default_factory=QualityRules)
    #: where claim photos are remembered to find reused ones (``cardamage.inference.
    #: photo_index``): a SQLite file (relative to this file) or a ``postgresql://`` URL
    photo_index: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _server_keys_into_their_section(cls, data: Any) -> Any:
        """Server keys at the top level (as a flat file had them) go into `serve`; it wins."""
        if not isinstance(data, dict) or not isinstance(data.get("serve", {}), dict):
            return data
        top = {k: data[k] for k in ServeConfig.model_fields if k in data}
        rest = {k: v for k, v in data.items() if k not in top}
        return rest | ({"serve": top | data.get("serve", {})} if top else {})

    @model_validator(mode="after")
    def _one_style(self) -> AppConfig:
        given = [p for p in ORIGINAL_TASKS if getattr(self, f"{p}_model_fp") is not None]
        if self.model is None and not given:
            raise ValueError(
                "no model: set 'model' (a run or model directory) or the original's *_model_fp"
            )
        if self.model is not None and given:
            raise ValueError("set either 'model' or the original's *_model_fp keys, not both")
        if given:
            for prefix in ORIGINAL_TASKS:
                if getattr(self, f"{prefix}_label_fp") is None and prefix in given:
                    raise ValueError(f"'{prefix}_model_fp' needs '{prefix}_label_fp'")
        return self

    @property
    def predictor_engine(self) -> str:
        """The engine the named model runs on: the original's three models are Keras models."""
        return "keras" if self.model is None else self.engine

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


#: The keys of an application config that hold paths (relative to the config file).
APP_PATH_KEYS = ("model", *(f"{p}_{k}" for p in ORIGINAL_TASKS for k in ("model_fp", "label_fp")))


def load_app_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> AppConfig:
    """The config file (relative paths in it relative to it, as users expect), then
    ``overrides``: flags, server keys among them; None means not given."""
    values = read_json_config(path) if path is not None else {}
    for key in APP_PATH_KEYS:
        if isinstance(values.get(key), str):
            values[key] = str(Path(path).parent / values[key])  # an absolute one stays itself
    index = values.get("photo_index")
    if isinstance(index, str) and "://" not in index:
        values["photo_index"] = str(Path(path).parent / index)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "model" in given:  # a model flag replaces the file's model, of either style
        values = {k: v for k, v in values.items() if not k.endswith("_model_fp")}
    server = {k: given.pop(k) for k in list(given) if k in ServeConfig.model_fields}
    try:
        return AppConfig.model_validate(
            deep_merge(values, given | ({"serve": server} if server else {}))
        )
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, str(path or "options"))) from None
