"""What each damage kind is, as data: where it may sit, how it may look, how large it may be.

One row per label of the ``damage_type`` task; the painters draw the looks, the fitting loop in
:mod:`.damage` sizes them. Keeping these numbers in one table lets a new kind be added as one row
and one painter.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DamageKind:
    """The drawing facts of one damage type."""

    surface: str  # the part surface it is painted on: body, glass or wheel
    #: Its looks and their relative chances ('+' joins two looks on one damage).
    styles: dict[str, float]
    #: Size range (its span relative to the car's width) over which it is fitted.
    size_range: tuple[float, float]
    #: Roughly how much of the car it changes per squared size: the first guess to fit from.
    area_per_size2: float


KINDS: dict[str, DamageKind] = {
    "dent": DamageKind("body", {"dent": 1.0}, (0.08, 0.9), 1.5),
    "glass": DamageKind("glass", {"crack": 1.0}, (0.08, 0.6), 1.0),
    "paint": DamageKind(
        "body", {"scratch": 0.5, "loss": 0.3, "scratch+loss": 0.2}, (0.08, 0.9), 0.75
    ),
    "wheel": DamageKind(
        "wheel", {"flat": 0.3, "rim": 0.15, "flat+rim": 0.1, "blown": 0.45}, (0.1, 0.4), 1.0
    ),
}
