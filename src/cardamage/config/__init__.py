"""Typed, validated configuration. Unknown keys and wrong types are errors that name the field.

The lowest layer with the tasks, errors and io: schemas only, nothing here builds a model or
loads one. :mod:`.train` is `cardamage train`'s config, :mod:`.app` the application config
(main.py, predict, serve) with :mod:`.serve` and :mod:`.thresholds`; :mod:`.scales` the
multi-scale rule both the config and the model check.
"""

from cardamage.config.app import (
    APP_PATH_KEYS,
    ORIGINAL_TASKS,
    AppConfig,
    OriginalTaskKeys,
    QualityRules,
    load_app_config,
)
from cardamage.config.base import deep_merge, format_validation_error, read_json_config
from cardamage.config.serve import API_KEY_ENV, FORMAT_ALIASES, ServeConfig
from cardamage.config.thresholds import Thresholds, resolve_thresholds
from cardamage.config.train import (
    DEFAULT_TASKS,
    FLAT_KEYS,
    PREFIXED,
    AugmentConfig,
    DataConfig,
    FineTuneConfig,
    HeadsConfig,
    ModelConfig,
    RunConfig,
    TaskConfig,
    TrainConfig,
    TrustConfig,
    TuneTopConfig,
    flat_name,
    load_train_config,
    read_tasks,
    sectioned,
    train_fields,
)

__all__ = [
    "API_KEY_ENV",
    "APP_PATH_KEYS",
    "DEFAULT_TASKS",
    "FLAT_KEYS",
    "FORMAT_ALIASES",
    "ORIGINAL_TASKS",
    "PREFIXED",
    "AppConfig",
    "AugmentConfig",
    "DataConfig",
    "FineTuneConfig",
    "HeadsConfig",
    "ModelConfig",
    "OriginalTaskKeys",
    "QualityRules",
    "RunConfig",
    "ServeConfig",
    "TaskConfig",
    "Thresholds",
    "TrainConfig",
    "TrustConfig",
    "TuneTopConfig",
    "deep_merge",
    "flat_name",
    "format_validation_error",
    "load_app_config",
    "load_train_config",
    "read_json_config",
    "read_tasks",
    "resolve_thresholds",
    "sectioned",
    "train_fields",
]
