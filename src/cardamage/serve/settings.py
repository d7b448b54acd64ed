"""Server settings: one validated object, from a JSON config file and command-line flags.

Unknown keys are errors (a typo in a limit must not silently leave the default in force), except
the original application's keys, so its `application_config.json` can be handed to the server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cardamage.config import format_validation_error, read_json_config
from cardamage.errors import CardamageError

API_KEY_ENV = "CARDAMAGE_API_KEY"

#: Keys of the original application's config: tolerated, as they mean nothing to the server.
ORIGINAL_APP_KEYS = frozenset(
    {"debug"}
    | {
        f"{prefix}_{key}"
        for prefix in ("damage", "location", "damagetype")
        for key in ("model_fp", "label_fp", "conf_threshold")
    }
)

#: A section of `application_config.json` that holds the server's keys (merged over the top).
SERVE_SECTION = "serve"

#: Pillow format names; MPO is how Pillow opens many camera JPEGs, so it counts as JPEG.
FORMAT_ALIASES = {"jpg": "jpeg", "mpo": "jpeg"}

Threshold = Annotated[float, Field(ge=0, le=1)]


class ServeSettings(BaseModel):
    """Everything `cardamage serve` can be told; defaults are the safe choice (loopback only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path | None = None  # a run or model directory; None when a Predictor is handed in
    engine: str = "keras"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: Required in the X-API-Key header when set; defaults to $CARDAMAGE_API_KEY.
    api_key: SecretStr | None = Field(
        default_factory=lambda: os.environ.get(API_KEY_ENV), validate_default=True
    )
    cors_origins: list[str] = Field(default_factory=list)  # empty: no CORS headers at all
    max_upload_mb: float = Field(20, gt=0, le=1024)  # per file
    max_files: int = Field(16, ge=1, le=1024)  # per request
    max_pixels: int = Field(40_000_000, ge=1)  # decompression-bomb guard, per image
    formats: tuple[str, ...] = ("jpeg", "png", "webp", "bmp", "gif")
    max_batch: int = Field(32, ge=1, le=1024)  # images in one backbone pass
    max_wait_ms: float = Field(5, ge=0, le=1000)  # longest a queued image waits for company
    max_queue: int = Field(256, ge=1)  # images queued or running, plus requests being read
    #: Per task: one threshold for every label, or one per label (overrides the model's).
    thresholds: dict[str, Threshold | list[Threshold]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _drop_original_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in ORIGINAL_APP_KEYS}
        return data

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        from PIL import Image

        Image.init()
        known = {name.lower() for name in Image.OPEN}
        names = tuple(dict.fromkeys(FORMAT_ALIASES.get(f.lower(), f.lower()) for f in formats))
        unknown = [f for f in names if f not in known]
        if unknown or not names:
            raise ValueError(f"unknown image formats {unknown} (known: {', '.join(sorted(known))})")
        return names

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServeSettings:
        if self.max_queue < self.max_files:
            raise ValueError(
                f"max_queue ({self.max_queue}) must hold one full request (max_files "
                f"{self.max_files}), or requests with that many files could never be served"
            )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def load_settings(
    config: Path | None = None, overrides: dict[str, Any] | None = None
) -> ServeSettings:
    """Config file values, then its `serve` section, then overrides (None means 'not given')."""
    values = read_json_config(config) if config else {}
    section = values.pop(SERVE_SECTION, {})
    if not isinstance(section, dict):
        raise CardamageError(f"{config}: '{SERVE_SECTION}' must be a JSON object")
    values.update(section)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ServeSettings.model_validate(values)
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, str(config or "options"))) from None
