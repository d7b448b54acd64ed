"""What a synthetic sample is labelled with, and how its labels follow from what was drawn.

The label names are the packaged task definitions' (:func:`cardamage.tasks.default_tasks`), in
their order, so the generator and the model can never disagree on a name or a column.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from cardamage.data.manifest import IMAGE_COLUMN
from cardamage.errors import CardamageError
from cardamage.synthetic.geometry import Box, Point
from cardamage.synthetic.layouts import VIEWS
from cardamage.tasks import default_tasks

_TASK_LABELS = {t.name: t.labels for t in default_tasks()}
SEVERITIES = _TASK_LABELS["severity"]
LOCATIONS = _TASK_LABELS["location"]
DAMAGE_TYPES = _TASK_LABELS["damage_type"]
UNDAMAGED = "whole"  # the severity of a car with no damage
DAMAGED_SEVERITIES = tuple(s for s in SEVERITIES if s != UNDAMAGED)
MANIFEST_HEADER = (IMAGE_COLUMN, *_TASK_LABELS)


#: Extent bands (the share of the car in the photo that the damage visibly changed) the damaged
#: severities are drawn in. The wide gaps between them keep the classes apart: a small damage,
#: a clearly larger one or two, a car a good part of which is smashed.
BANDS = {"minor": (0.06, 0.075), "moderate": (0.18, 0.23), "severe": (0.45, 0.58)}
#: Extent at which severity turns moderate, then severe (geometric midpoints of the gaps).
SEVERITY_THRESHOLDS = (0.116, 0.322)
MAX_DAMAGES = 3  # at most this many damages on one car


@dataclass(frozen=True)
class SynthFrequencies:
    """Label frequencies of the generated set; the defaults are close to the original project's.

    Weights are relative. A kind a view cannot show (a wheel's rim in a front or rear view) is
    drawn from the other kinds, so observed wheel damage is rarer than its weight says; a car
    whose view shows no kind of positive weight stays undamaged.
    """

    p_undamaged: float = 0.15  # share of cars with no damage -> severity 'whole'
    severity: dict[str, float] = field(
        default_factory=lambda: {"minor": 0.41, "moderate": 0.35, "severe": 0.24}
    )
    damage_types: dict[str, float] = field(
        default_factory=lambda: {"dent": 0.3, "glass": 0.2, "paint": 0.3, "wheel": 0.25}
    )
    views: dict[str, float] = field(
        default_factory=lambda: {
            "side": 0.3,
            "front": 0.2,
            "rear": 0.2,
            "three_quarter_front": 0.15,
            "three_quarter_rear": 0.15,
        }
    )
    max_damages: int = 3  # several damages may sit on one car

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_undamaged <= 1.0:
            raise CardamageError(f"p_undamaged must be in [0, 1], not {self.p_undamaged}")
        if not 1 <= self.max_damages <= MAX_DAMAGES:
            raise CardamageError(f"max_damages must be 1 to {MAX_DAMAGES}, not {self.max_damages}")
        _check_weights("severity", self.severity, DAMAGED_SEVERITIES)
        _check_weights("damage_types", self.damage_types, DAMAGE_TYPES)
        _check_weights("views", self.views, VIEWS)


def _check_weights(name: str, weights: Mapping[str, float], known: Sequence[str]) -> None:
    unknown = sorted(set(weights) - set(known))
    if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise CardamageError(
            f"{name} weights must be non-negative, not all zero, keys from {list(known)}: "
            f"{dict(weights)}"
        )


@dataclass(frozen=True)
class Damage:
    """One damage as drawn: what, where on the car, how large, and where in the image."""

    kind: str  # dent | glass | paint | wheel
    style: str  # how it looks: dent, crack, scratch, loss, flat, rim (or two joined by '+')
    location: str  # front | rear | side: the car part it was drawn on
    part: str  # name of that part, e.g. 'side_panel', 'windscreen', 'wheel_front'
    size: float  # how far it spans, relative to the car's width (for a wheel: how bad)
    center: Point  # x, y in output pixels: the impact point, or the wheel's centre
    bbox: Box  # x0, y0, x1, y1 in output pixels; every changed pixel lies inside
    area: float  # share of the car's pixels in the photo that it visibly changed


@dataclass(frozen=True)
class SynthSample:
    """A photo, its three labels, and the damages they were derived from."""

    image: Image.Image
    severity: str  # minor | moderate | severe | whole
    location: tuple[str, ...]  # subset of LOCATIONS, in label order
    damage_type: tuple[str, ...]  # subset of DAMAGE_TYPES, in label order
    damages: tuple[Damage, ...]
    view: str  # one of VIEWS

    @property
    def extent(self) -> float:
        return damage_extent(self.damages)


def damage_extent(damages: Sequence[Damage]) -> float:
    """The severity score: how much of the car in the photo the damages visibly changed."""
    return float(sum(d.area for d in damages))


def severity_for_extent(extent: float) -> str:
    """Severity is a step function of extent, the damaged severities in their label order;
    'whole' only when there is no damage at all."""
    if extent <= 0:
        return UNDAMAGED
    return DAMAGED_SEVERITIES[bisect.bisect_right(SEVERITY_THRESHOLDS, extent)]


def choice(rng: np.random.Generator, weights: Mapping[str, float], order: Sequence[str]) -> str:
    """Weighted pick in a fixed key order, so equal mappings draw alike whatever their order."""
    keys = [k for k in order if weights.get(k, 0.0) > 0]
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]
