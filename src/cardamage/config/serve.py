"""The server's section of the application config: where it listens, who may call it, limits."""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from cardamage.config.base import StrictModel

API_KEY_ENV = "CARDAMAGE_API_KEY"
#: Pillow format names; MPO is how Pillow opens many camera JPEGs, so it counts as JPEG.
FORMAT_ALIASES = {"jpg": "jpeg", "mpo": "jpeg"}


class ServeConfig(StrictModel):
    """The `serve` section: everything the server adds; defaults are the safe choice (loopback
    only). Unknown keys are errors: a typo in a limit must not silently leave the default."""

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
    def _queue_holds_a_request(self) -> ServeConfig:
        if self.max_queue < self.max_files:
            raise ValueError(
                f"max_queue ({self.max_queue}) must hold one full request (max_files "
                f"{self.max_files}), or requests with that many files could never be served"
            )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
