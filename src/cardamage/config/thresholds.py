"""Decision thresholds given by a person (config, flags, API): checked against a model's tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError

from cardamage.config.base import format_validation_error
from cardamage.errors import CardamageError
from cardamage.tasks import Task

Threshold = Annotated[float, Field(ge=0, le=1)]


def _threshold_shape(value: Any) -> str:
    """Which form a task's thresholds take, so a mistake reports that form's error alone."""
    if isinstance(value, Mapping):
        return "by_label"
    return "per_label" if isinstance(value, list | tuple) else "value"


#: Per task: one threshold for every label, one per label in order, or some labels by name.
Thresholds = dict[
    str,
    Annotated[
        Annotated[Threshold, Tag("value")]
        | Annotated[list[Threshold], Tag("per_label")]
        | Annotated[dict[str, Threshold], Tag("by_label")],
        Discriminator(_threshold_shape),
    ],
]


def resolve_thresholds(overrides: Mapping[str, Any], tasks: Sequence[Task]) -> dict[str, tuple]:
    """Threshold overrides checked against a model's tasks: one per label, by task. The one
    check on every path (console, predict, serve): an unknown task or label is named and a
    value outside [0, 1] refused, so a typo never leaves a threshold silently unchanged."""
    try:
        overrides = TypeAdapter(Thresholds).validate_python(dict(overrides))
    except ValidationError as e:
        raise CardamageError(format_validation_error(e, "thresholds")) from None
    by_name = {t.name: t for t in tasks}
    unknown = sorted(set(overrides) - set(by_name))
    if unknown:
        raise CardamageError(f"thresholds name unknown task(s) {unknown} (tasks: {list(by_name)})")
    return {name: _per_label(by_name[name], value) for name, value in overrides.items()}


def _per_label(task: Task, value: float | list[float] | dict[str, float]) -> tuple[float, ...]:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(task.labels))
        if unknown:
            raise CardamageError(
                f"thresholds for '{task.name}' name unknown label(s) {unknown} "
                f"(labels: {list(task.labels)})"
            )
        current = dict(zip(task.labels, task.thresholds, strict=True))
        return tuple(value.get(label, current[label]) for label in task.labels)
    if isinstance(value, list | tuple):
        if len(value) != len(task.labels):
            raise CardamageError(
                f"thresholds for '{task.name}': {len(value)} given, {len(task.labels)} labels"
            )
        return tuple(value)
    return (value,) * len(task.labels)
