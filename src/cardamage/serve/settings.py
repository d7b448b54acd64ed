"""Server settings: the application config's `serve` section with the model to serve.

Read through `load_app_config`, the one schema of `application_config.json` (main.py and
`predict --config` read it too), so the original application's file can be handed to the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from cardamage.config import (
    AppConfig,
    QualityRules,
    ServeConfig,
    Thresholds,
    format_validation_error,
    load_app_config,
)
from cardamage.errors import CardamageError


class ServeSettings(ServeConfig):
    """Everything `cardamage serve` can be told; defaults are the safe choice (loopback only)."""

    model: Path | None = None  # a run or model directory; None when a Predictor is handed in
    engine: str = "keras"
    #: Per task: one threshold for every label, or per label (overrides the model's).
    thresholds: Thresholds = Field(default_factory=dict)
    quality: QualityRules = Field(default_factory=QualityRules)
    #: the photo index (a SQLite file or a postgresql:// URL); None: no reused-photo check
    photo_index: str | None = None


def load_settings(
    config: Path | None = None, overrides: dict[str, Any] | None = None
) -> ServeSettings:
    """Config file values, then overrides (flags; None means 'not given')."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if config is None:  # no file: the flags alone (a Predictor may come without a model)
        try:
            return ServeSettings.model_validate(given)
        except ValidationError as e:
            raise CardamageError(format_validation_error(e, "options")) from None
    return settings_from(load_app_config(config, given))


def settings_from(cfg: AppConfig) -> ServeSettings:
    """The server's view of an application config: its `serve` section and the model."""
    return ServeSettings(
        **dict(cfg.serve),
        model=cfg.model,
        engine=cfg.engine,
        thresholds=cfg.thresholds,
        quality=cfg.quality,
        photo_index=cfg.photo_index,
    )
