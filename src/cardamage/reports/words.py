"""How the report says things: task titles, label lists, percentages, numbers."""

from __future__ import annotations

from collections.abc import Sequence

from cardamage.metrics.results import fmt
from cardamage.tasks import display_label


def task_title(name: str) -> str:
    """``damage_type`` -> "Damage type": headings a person reads."""
    return name.replace("_", " ").capitalize()


def label_list(labels: Sequence[str]) -> str:
    return ", ".join(display_label(label) for label in labels) or "none"


def percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def number(value: float | int | None) -> str:
    """Three decimals: enough to compare, narrow enough for a laptop screen."""
    return fmt(value, 3)
