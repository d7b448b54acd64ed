"""What every config section shares: strict models, reading a JSON file, merging, error lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cardamage.errors import CardamageError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, objects merged key by key at every depth (lists replaced)."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = deep_merge(merged[key], value)
        merged[key] = value
    return merged


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
