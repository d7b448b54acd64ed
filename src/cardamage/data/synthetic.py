"""Procedural car-damage photos: the embedded default data set, so the tool runs with no downloads.

Each sample is a car drawn from polygons (side, front, rear or three-quarter view) on a random
background, with up to a few damages painted where they sit on the car. Labels follow from what
was drawn: location from the car part under each damage, damage type from its kind, severity from
an extent score measured on the drawing (the share of the car in the photo that the damages
visibly changed). Damage is drawn to be seen: a frozen ImageNet backbone with small heads must
learn the tasks from about 1,800 photos, so each kind has a bold look of its own, larger damage
looks heavier, and the severities sit in extent bands with wide gaps between them.

Every sample draws from three independent random streams (scene, damage, finish), so switching the
damage off leaves the rest of the photo unchanged: nothing but the damage separates the classes.
"""

from __future__ import annotations

import colorsys
import csv
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from cardamage.errors import CardamageError
from cardamage.io import atomic_path, atomic_write_text

SEVERITIES = ("minor", "moderate", "severe", "whole")
LOCATIONS = ("front", "rear", "side")
DAMAGE_TYPES = ("dent", "glass", "paint", "wheel")
VIEWS = ("side", "front", "rear", "three_quarter_front", "three_quarter_rear")
MANIFEST_HEADER = ("image", "severity", "location", "damage_type")
LABEL_SEPARATOR = ";"

#: Extent bands (the share of the car in the photo that the damage visibly changed) the damaged
#: severities are drawn in. The wide gaps between them keep the classes apart: a small damage,
#: a clearly larger one or two, a car a good part of which is smashed.
_BANDS = {"minor": (0.06, 0.075), "moderate": (0.18, 0.23), "severe": (0.45, 0.58)}
#: Extent at which severity turns moderate, then severe (geometric midpoints of the gaps).
SEVERITY_THRESHOLDS = (0.116, 0.322)
#: Size range of one damage (its span relative to the car's width), over which it is fitted.
_SIZE_RANGE = {"dent": (0.08, 0.9), "glass": (0.08, 0.6), "paint": (0.08, 0.9), "wheel": (0.1, 0.4)}
#: Roughly how much of the car a damage changes per squared size: the first guess to fit from.
_AREA_PER_SIZE2 = {"dent": 1.5, "glass": 1.0, "paint": 0.75, "wheel": 1.0}
#: How violent the damage of each severity looks: a crash that smashed much of the car also
#: crumpled its metal and shattered its glass; a small knock left a soft dent or a chip.
_HEAVY = {"minor": (0.0, 0.2), "moderate": (0.4, 0.6), "severe": (0.8, 1.0)}
_VISIBLE = 24  # a pixel counts as damaged where a channel changed by more than this
_FIT_STEPS = 5
#: Car width over frame width: end-on cars are framed whole or nearly; side and three-quarter
#: views, long and low, are close-ups of part of the car (damage photos mostly are).
_ZOOM = {"end": (1.0, 1.4), "long": (1.7, 2.5)}
_MAX_DAMAGES = 3
#: Chances of 1, 2 or 3 damages given the severity: worse cars have more of them.
_COUNT_WEIGHTS = {"minor": (1.0, 0.0, 0.0), "moderate": (0.1, 0.9, 0.0), "severe": (0.0, 0.1, 0.9)}
_SURFACE = {"dent": "body", "paint": "body", "glass": "glass", "wheel": "wheel"}
_STYLES = {
    "dent": {"dent": 1.0},
    "glass": {"crack": 1.0},
    "paint": {"scratch": 0.5, "loss": 0.3, "scratch+loss": 0.2},
    "wheel": {"flat": 0.3, "rim": 0.15, "flat+rim": 0.1, "blown": 0.45},
}
_SUPERSAMPLE = 2  # drawn at twice the size and reduced: cheap anti-aliasing
_PLAN_TRIES = 12
_KIND_TRIES = 4  # tries of the same kinds (other sites, sizes) before drawing other kinds

RGB = tuple[int, int, int]
Point = tuple[float, float]
Poly = tuple[Point, ...]
Box = tuple[int, int, int, int]

_WHITE: RGB = (255, 255, 255)
_BLACK: RGB = (0, 0, 0)
#: Primer greys and bare metal: what paint loss shows.
_PRIMERS: tuple[RGB, ...] = ((168, 168, 162), (98, 100, 104), (202, 205, 209))


# --------------------------------------------------------------------------- public types


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
        if not 1 <= self.max_damages <= _MAX_DAMAGES:
            raise CardamageError(f"max_damages must be 1 to {_MAX_DAMAGES}, not {self.max_damages}")
        _check_weights("severity", self.severity, SEVERITIES[:3])
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
    """Severity is a step function of extent: 'whole' only when there is no damage at all."""
    if extent <= 0:
        return "whole"
    low, high = SEVERITY_THRESHOLDS
    return "minor" if extent < low else "moderate" if extent < high else "severe"


# --------------------------------------------------------------------------- car geometry


@dataclass(frozen=True)
class Part:
    """A polygon of the car, drawn in its role's colour; damage looks its location up here."""

    name: str
    role: str  # colour role: body, body_hi, body_lo, seam, glass, wheel, trim, dark, ...
    location: str  # front | rear | side
    poly: Poly

    @property
    def surface(self) -> str:
        """What damage may sit on it: body, glass, wheel; 'other' for lamps, trims, tyres."""
        if self.role in ("body", "body_hi", "body_lo", "seam"):
            return "body"
        return self.role if self.role in ("glass", "wheel") else "other"


@dataclass(frozen=True)
class Wheel:
    """A wheel seen side-on (an ellipse in three-quarter views), drawn with tyre and rim."""

    name: str
    center: Point
    rx: float
    ry: float


@dataclass(frozen=True)
class CarLayout:
    """One view of one car: parts in drawing order, in unit coordinates (width 1) or pixels."""

    view: str
    parts: tuple[Part, ...]
    wheels: tuple[Wheel, ...]
    width: float
    height: float

    def wheel(self, name: str) -> Wheel:
        return next(w for w in self.wheels if w.name == name)

    def mapped(
        self, fn: Callable[[Point], Point], sx: float, sy: float, width: float, height: float
    ) -> CarLayout:
        """The layout moved by ``fn``, an affine map scaling x by ``sx`` and y by ``sy``."""
        parts = tuple(replace(p, poly=tuple(fn(q) for q in p.poly)) for p in self.parts)
        wheels = tuple(
            replace(w, center=fn(w.center), rx=w.rx * abs(sx), ry=w.ry * abs(sy))
            for w in self.wheels
        )
        return replace(self, parts=parts, wheels=wheels, width=width, height=height)

    def mirrored(self) -> CarLayout:
        return self.mapped(lambda p: (self.width - p[0], p[1]), -1.0, 1.0, self.width, self.height)


@dataclass(frozen=True)
class _Shape:
    """Body-style proportions of one car, shared by all its views."""

    height: float  # side-view height over length
    belt: float  # belt line (bottom of the windows) as a share of height
    wheel_r: float
    wheel_x: tuple[float, float]
    a_top: float  # where the roof starts (top of the windscreen pillar)
    c_top: float  # where the roof ends
    c_base: float  # foot of the rear pillar
    end_height: float  # front/rear-view height over width


def _random_shape(rng: np.random.Generator) -> _Shape:
    hatch = rng.random() < 0.4
    return _Shape(
        height=rng.uniform(0.3, 0.4),
        belt=rng.uniform(0.4, 0.48),
        wheel_r=rng.uniform(0.078, 0.095),
        wheel_x=(rng.uniform(0.17, 0.21), rng.uniform(0.79, 0.83)),
        a_top=rng.uniform(0.36, 0.42),
        c_top=rng.uniform(0.74, 0.8) if hatch else rng.uniform(0.64, 0.7),
        c_base=rng.uniform(0.9, 0.95) if hatch else rng.uniform(0.8, 0.85),
        end_height=rng.uniform(0.72, 0.86),
    )


def _rect(x0: float, y0: float, x1: float, y1: float) -> Poly:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> Poly:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return tuple(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))


def _bar(p0: Point, p1: Point, w: float) -> Poly:
    """A thin quad from ``p0`` to ``p1``: panel seams and trim lines are polygons like the rest."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * w / 2, dx / n * w / 2
    return (
        (p0[0] + ox, p0[1] + oy),
        (p1[0] + ox, p1[1] + oy),
        (p1[0] - ox, p1[1] - oy),
        (p0[0] - ox, p0[1] - oy),
    )


def _mirror_x(poly: Poly) -> Poly:
    return tuple((1.0 - x, y) for x, y in poly)


def _clip(poly: Poly, window: Poly) -> Poly:
    """The part of ``poly`` inside the convex ``window`` (Sutherland-Hodgman); () if none."""
    sign = 1.0 if _signed_area(window) > 0 else -1.0
    out = list(poly)
    for a, b in zip(window, window[1:] + window[:1], strict=True):
        src, out = out, []
        for p, q in zip(src, src[1:] + src[:1], strict=True):
            sp, sq = sign * _cross(a, b, p), sign * _cross(a, b, q)
            if sp >= 0:
                out.append(p)
            if (sp >= 0) != (sq >= 0):
                t = sp / (sp - sq)
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        if not out:
            return ()
    return tuple(out) if len(out) >= 3 else ()


def _cross(a: Point, b: Point, p: Point) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _signed_area(poly: Poly) -> float:
    return 0.5 * sum(
        p[0] * q[1] - q[0] * p[1] for p, q in zip(poly, poly[1:] + poly[:1], strict=True)
    )


def _split_ends(parts: Sequence[Part], front: float = 0.1, rear: float = 0.9) -> list[Part]:
    """Cut side-view panels at the car's ends: the nose is 'front', the tail 'rear'."""
    spans = (("front", -1.0, front), ("side", front, rear), ("rear", rear, 2.0))
    out = []
    for location, x0, x1 in spans:
        for p in parts:
            poly = _clip(p.poly, _rect(x0, -1.0, x1, 2.0))
            if poly:
                out.append(Part(f"{location}_{p.name}", p.role, location, poly))
    return out


def _side_layout(sh: _Shape, ends: bool = True) -> CarLayout:
    """Side view, nose at x=0: the side, with the front and rear ends at the extremities
    (or, without ``ends``, all of it 'side')."""
    h, r = sh.height, sh.wheel_r
    yb, ybot = h * sh.belt, h - 0.35 * r
    yn, yt = yb + 0.035, yb - 0.005  # tops of nose and tail
    lower = (
        (0.0, yn + 0.02),
        (0.015, yn),
        (0.25, yb),
        (0.86, yb),
        (0.985, yt),
        (1.0, yt + 0.03),
        (1.0, ybot - 0.035),
        (0.975, ybot),
        (0.025, ybot),
        (0.0, ybot - 0.045),
    )
    xf, xr = sh.wheel_x
    xb = (sh.a_top + sh.c_top) / 2 + 0.02  # centre pillar
    door_rear = min(sh.c_base - 0.04, xr - 1.3 * r)
    panels = [
        Part("panel", "body", "side", lower),
        Part("shine", "body_hi", "side", _clip(lower, _rect(-1, -1, 2, yb + 0.018))),
        Part("rocker", "body_lo", "side", _clip(lower, _rect(-1, ybot - 0.03, 2, 2))),
        Part("crease", "seam", "side", _bar((0.01, yn + 0.03), (0.99, yt + 0.045), 0.004)),
        *(
            Part(
                f"seam{i}", "seam", "side", _bar((x, yb + 0.008), (x - 0.004, ybot - 0.012), 0.004)
            )
            for i, x in enumerate((0.27, xb, door_rear))
        ),
    ]
    cabin = (
        (0.25, yb),
        (sh.a_top, 0.012),
        (sh.a_top + 0.05, 0.0),
        (sh.c_top - 0.05, 0.0),
        (sh.c_top, 0.012),
        (sh.c_base, yb),
    )
    body = _split_ends(panels) if ends else [replace(p, name=f"side_{p.name}") for p in panels]
    parts = [*body, Part("roof", "body", "side", cabin)]
    for name, x in (("front", xf), ("rear", xr)):
        arch = _clip(_ellipse(x, h - r, 1.18 * r, 1.18 * r), _rect(-1, -1, 2, ybot))
        parts.append(Part(f"arch_{name}", "dark", "side", arch))
    for name, x in (("front", xf), ("rear", xr)):
        parts.append(Part(f"wheel_{name}", "wheel", "side", _ellipse(x, h - r, r, r)))
    parts += _side_windows(sh, yb, xb)
    parts += [
        Part(
            "mirror",
            "body",
            "side",
            ((0.265, yb), (0.28, yb - 0.03), (0.31, yb - 0.032), (0.315, yb)),
        ),
        Part(
            "headlight",
            "head",
            "front",
            ((0.004, yn + 0.012), (0.055, yn + 0.004), (0.06, yn + 0.03), (0.006, yn + 0.035)),
        ),
        Part(
            "taillight",
            "tail",
            "rear",
            ((0.955, yt + 0.008), (0.998, yt + 0.02), (0.998, yt + 0.05), (0.95, yt + 0.042)),
        ),
        Part("bumper_front", "trim", "front", _clip(lower, _rect(-1, ybot - 0.045, 0.085, 2))),
        Part("bumper_rear", "trim", "rear", _clip(lower, _rect(0.92, ybot - 0.045, 2, 2))),
        Part("handle_front", "dark", "side", _rect(xb - 0.07, yb + 0.03, xb - 0.035, yb + 0.04)),
        Part(
            "handle_rear",
            "dark",
            "side",
            _rect(door_rear - 0.06, yb + 0.03, door_rear - 0.025, yb + 0.04),
        ),
    ]
    wheels = tuple(Wheel(f"wheel_{n}", (x, h - r), r, r) for n, x in (("front", xf), ("rear", xr)))
    return CarLayout("side", tuple(p for p in parts if p.poly), wheels, 1.0, h)


def _side_windows(sh: _Shape, yb: float, xb: float) -> list[Part]:
    """Front and rear side windows, inset in the cabin and split by the centre pillar."""
    yt, yw = 0.028, yb - 0.01

    def pillar_x(base: float, top: float, y: float) -> float:
        return base + (top - base) * (yb - y) / (yb - 0.012)

    front = (
        (pillar_x(0.25, sh.a_top, yw) + 0.03, yw),
        (pillar_x(0.25, sh.a_top, yt) + 0.025, yt),
        (xb - 0.013, yt),
        (xb - 0.018, yw),
    )
    rear = (
        (xb + 0.013, yw),
        (xb + 0.013, yt),
        (pillar_x(sh.c_base, sh.c_top, yt) - 0.025, yt),
        (pillar_x(sh.c_base, sh.c_top, yw) - 0.03, yw),
    )
    return [
        Part("window_front", "glass", "side", front),
        Part("window_rear", "glass", "side", rear),
    ]


def _end_layout(sh: _Shape, end: str, belt: float) -> CarLayout:
    """Front or rear view, width 1, belt line at ``belt`` of the height: every part of it is at
    that end of the car."""
    h = sh.end_height
    yb, ybot = h * belt, h - 0.065
    lower = (
        (0.03, yb),
        (0.97, yb),
        (1.0, yb + 0.07),
        (1.0, ybot - 0.045),
        (0.97, ybot),
        (0.03, ybot),
        (0.0, ybot - 0.045),
        (0.0, yb + 0.07),
    )
    glass_name = "windscreen" if end == "front" else "rear_window"
    lamp_role, lamp = (
        ("head", ((0.04, yb + 0.06), (0.27, yb + 0.075), (0.26, yb + 0.13), (0.05, yb + 0.125)))
        if end == "front"
        else ("tail", ((0.02, yb + 0.05), (0.3, yb + 0.06), (0.29, yb + 0.15), (0.03, yb + 0.14)))
    )
    mirror = ((0.015, yb - 0.075), (0.11, yb - 0.065), (0.115, yb - 0.02), (0.025, yb - 0.025))
    parts = [
        Part("tyre_l", "tyre", end, _rect(0.07, ybot - 0.05, 0.19, h)),
        Part("tyre_r", "tyre", end, _rect(0.81, ybot - 0.05, 0.93, h)),
        Part("face", "body", end, lower),
        Part("face_shine", "body_hi", end, _clip(lower, _rect(-1, -1, 2, yb + 0.025))),
        Part("face_seam", "seam", end, _bar((0.06, yb + 0.045), (0.94, yb + 0.045), 0.004)),
        Part(
            "cabin",
            "body",
            end,
            ((0.11, yb + 0.005), (0.23, 0.012), (0.77, 0.012), (0.89, yb + 0.005)),
        ),
        Part(
            glass_name,
            "glass",
            end,
            ((0.15, yb - 0.012), (0.255, 0.04), (0.745, 0.04), (0.85, yb - 0.012)),
        ),
        Part("mirror_l", "body", end, mirror),
        Part("mirror_r", "body", end, _mirror_x(mirror)),
        Part("lamp_l", lamp_role, end, lamp),
        Part("lamp_r", lamp_role, end, _mirror_x(lamp)),
        Part("bumper", "trim", end, _clip(lower, _rect(-1, ybot - 0.1, 2, 2))),
    ]
    if end == "front":
        parts.append(
            Part(
                "grille",
                "dark",
                end,
                ((0.33, yb + 0.085), (0.67, yb + 0.085), (0.65, yb + 0.19), (0.35, yb + 0.19)),
            )
        )
        parts.append(Part("plate", "plate", end, _rect(0.39, ybot - 0.09, 0.61, ybot - 0.04)))
    else:
        parts.append(Part("plate", "plate", end, _rect(0.38, yb + 0.11, 0.62, yb + 0.17)))
    return CarLayout(end, tuple(parts), (), 1.0, h)


_FACE_WIDTH = 0.3  # share of a three-quarter view's width taken by the car's front or rear
_NEAR_CUT = 0.08  # the side view's nose (or tail) hidden behind that face


def _three_quarter_layout(sh: _Shape, end: str) -> CarLayout:
    """Three-quarter view: the face of ``end`` at the left, the side foreshortened to its right."""
    fw, h = _FACE_WIDTH, sh.height
    side = _side_layout(sh, ends=False)
    near = (0.25, sh.a_top)  # near pillar (foot, top) in side-view x
    if end == "rear":
        side, near = side.mirrored(), (1 - sh.c_base, 1 - sh.c_top)
    k = (1 - fw) / (1 - _NEAR_CUT)

    def to_side(p: Point) -> Point:
        return (fw + (p[0] - _NEAR_CUT) * k, p[1])

    side_parts = [
        Part(p.name, p.role, "side", poly)
        for p in side.parts
        if (poly := _clip(p.poly, _rect(_NEAR_CUT, -1, 2, 2)))
    ]
    side = replace(side, parts=tuple(side_parts)).mapped(to_side, k, 1.0, 1.0, h)
    sy = h / sh.end_height
    fx = fw + 0.02  # the face overlaps the side a little: no gap at the corner
    face = _end_layout(sh, end, sh.belt).mapped(lambda p: (p[0] * fx, p[1] * sy), fx, sy, 1.0, h)
    dropped = ("tyre_r", "mirror_r", "cabin", "windscreen", "rear_window")
    face_parts = [p for p in face.parts if p.name not in dropped]
    yb = h * sh.belt
    base, top = to_side((near[0], yb))[0], to_side((near[1], 0.0))[0]

    def pillar_x(y: float) -> float:
        return base + (top - base) * (yb - y) / (yb - 0.012)

    glass_name = "windscreen" if end == "front" else "rear_window"
    # the bonnet (or boot lid) corner between the face and the side's wing
    hood = Part(
        "hood",
        "body",
        end,
        ((0.5 * fx, yb), (base, yb), (fx + 0.01, yb + 0.028), (0.5 * fx, yb + 0.07)),
    )
    bridge = [
        Part(
            "cabin",
            "body",
            end,
            ((0.11 * fx, yb + 0.005), (0.23 * fx, 0.012), (top, 0.012), (base, yb)),
        ),
        Part(
            glass_name,
            "glass",
            end,
            (
                (0.15 * fx, yb - 0.012),
                (0.26 * fx, 0.04),
                (pillar_x(0.04) - 0.02, 0.04),
                (pillar_x(yb - 0.012) - 0.02, yb - 0.012),
            ),
        ),
    ]
    view = f"three_quarter_{end}"
    return CarLayout(view, (*side.parts, hood, *face_parts, *bridge), side.wheels, 1.0, h)


def _unit_layout(view: str, sh: _Shape) -> CarLayout:
    if view == "side":
        return _side_layout(sh)
    if view in ("front", "rear"):
        return _end_layout(sh, view, sh.belt - 0.08)  # end-on, the glasshouse looks shorter
    return _three_quarter_layout(sh, view.removeprefix("three_quarter_"))


def _place(unit: CarLayout, rng: np.random.Generator, canvas: int) -> CarLayout:
    """Camera distance (the car 1 to 2.5 frames wide: close-ups crop it), position jitter and a
    slight tilt."""
    zoom = _ZOOM["end" if unit.view in ("front", "rear") else "long"]
    s = math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1]))) * canvas
    angle = math.radians(rng.uniform(-4, 4))
    cos, sin = math.cos(angle), math.sin(angle)
    half_w, half_h = s / 2, s * unit.height / 2
    margin = 0.02 * canvas
    # a car smaller than the frame stays inside it; a larger one still fills it
    slack_x = abs(canvas / 2 - half_w - abs(sin) * half_h - margin)
    slack_y = abs(canvas / 2 - half_h - abs(sin) * half_w - margin)
    cx = canvas / 2 + rng.uniform(-slack_x, slack_x)
    cy = canvas / 2 + rng.uniform(-slack_y, slack_y)

    def fn(p: Point) -> Point:
        x, y = (p[0] - 0.5) * s, (p[1] - unit.height / 2) * s
        return (cx + cos * x - sin * y, cy + sin * x + cos * y)

    return unit.mapped(fn, s, s, s, s * unit.height)


# --------------------------------------------------------------------------- colours


def _mix(c: RGB, target: RGB, t: float) -> RGB:
    return tuple(int(a + (b - a) * t + 0.5) for a, b in zip(c, target, strict=True))  # type: ignore[return-value]


def _hsv(h: float, s: float, v: float) -> RGB:
    return tuple(int(255 * c + 0.5) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore[return-value]


def _grey(v: float) -> RGB:
    g = int(v + 0.5)
    return (g, g, g)


def _luma(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _body_colour(rng: np.random.Generator) -> RGB:
    """Common car colours: many whites, silvers, greys and blacks, the rest any hue."""
    if rng.random() < 0.4:
        return _grey(
            rng.choice(
                [
                    rng.uniform(215, 245),
                    rng.uniform(165, 200),
                    rng.uniform(90, 130),
                    rng.uniform(18, 45),
                ]
            )
        )
    return _hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.9))


def _palette(rng: np.random.Generator) -> dict[str, RGB]:
    body = _body_colour(rng)
    trims = (_grey(rng.uniform(20, 45)), _grey(rng.uniform(55, 80)), body)
    return {
        "body": body,
        "body_hi": _mix(body, _WHITE, rng.uniform(0.12, 0.25)),
        "body_lo": _mix(body, _BLACK, rng.uniform(0.2, 0.35)),
        "seam": _mix(body, _BLACK, 0.45),
        "glass": _hsv(rng.uniform(0.5, 0.66), rng.uniform(0.05, 0.4), rng.uniform(0.12, 0.5)),
        "trim": trims[rng.integers(len(trims))],
        "dark": _grey(rng.uniform(15, 40)),
        "tyre": _grey(rng.uniform(22, 42)),
        "head": _hsv(rng.uniform(0.1, 0.6), rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)),
        "tail": _hsv(rng.uniform(-0.02, 0.02), rng.uniform(0.75, 0.95), rng.uniform(0.6, 0.9)),
        "plate": (235, 235, 230) if rng.random() < 0.7 else (235, 200, 40),
    }


@dataclass(frozen=True)
class _WheelStyle:
    tyre: RGB
    rim: RGB
    hole: RGB  # openings between the spokes
    rim_frac: float  # rim radius over tyre radius
    spokes: int  # 0 = a plain hubcap
    phase: float


def _wheel_style(rng: np.random.Generator, palette: dict[str, RGB]) -> _WheelStyle:
    rims = [_grey(rng.uniform(lo, hi)) for lo, hi in ((170, 215), (120, 150), (215, 235))]
    return _WheelStyle(
        tyre=palette["tyre"],
        rim=rims[rng.integers(len(rims))],
        hole=_grey(rng.uniform(15, 50)),
        rim_frac=rng.uniform(0.56, 0.7),
        spokes=int(rng.choice([0, 5, 5, 6, 7, 10])),
        phase=rng.uniform(0, 2 * np.pi),
    )


# --------------------------------------------------------------------------- scene


@dataclass
class _Canvas:
    """The photo being drawn (at render scale) and, per pixel, which car part is on top."""

    image: Image.Image
    ids: np.ndarray  # 0 = not the car, i + 1 = car.parts[i]
    car: CarLayout
    palette: dict[str, RGB]
    wheel_style: _WheelStyle
    light: Point  # direction towards the light, in the image plane

    @property
    def line_width(self) -> int:
        """Thin lines: one output pixel wide."""
        return _SUPERSAMPLE

    @cached_property
    def car_pixels(self) -> int:
        """The car's pixels in the frame: extents are shares of the car the photo shows."""
        return int(np.count_nonzero(self.ids))

    @cached_property
    def visible(self) -> np.ndarray:
        """Ids of the parts in the frame."""
        return np.unique(self.ids)

    def shown(self, keep: Callable[[Part], bool]) -> np.ndarray:
        """Like ``part_ids``, only the parts in the frame."""
        ids = self.part_ids(keep)
        return ids[np.isin(ids, self.visible)]

    def part_ids(self, keep: Callable[[Part], bool]) -> np.ndarray:
        return np.array([i + 1 for i, p in enumerate(self.car.parts) if keep(p)], dtype=np.int64)

    def lut(self, ids: np.ndarray) -> np.ndarray:
        table = np.zeros(256, dtype=bool)
        table[ids] = True
        return table

    def box(self, center: Point, radius: float) -> Box:
        size = self.image.width
        x, y = center
        return (
            max(0, int(x - radius)),
            max(0, int(y - radius)),
            min(size, math.ceil(x + radius) + 1),
            min(size, math.ceil(y + radius) + 1),
        )

    def pixels(self, box: Box) -> np.ndarray:
        return np.asarray(self.image.crop(box), dtype=np.float32)

    def put(self, box: Box, new: np.ndarray | Image.Image, ids: np.ndarray) -> None:
        """Copy ``new`` into ``box`` only where the top part is one of ``ids``."""
        x0, y0, x1, y1 = box
        mask = self.lut(ids)[self.ids[y0:y1, x0:x1]]
        old = np.asarray(self.image.crop(box))
        out = np.where(mask[..., None], np.clip(np.asarray(new), 0, 255).astype(np.uint8), old)
        self.image.paste(Image.fromarray(out), box[:2])


def _draw_scene(rng: np.random.Generator, canvas: int, views: Mapping[str, float]) -> _Canvas:
    """Background, shadow and an undamaged car; every random choice from the scene stream."""
    view = _choice(rng, views, VIEWS)
    unit = _unit_layout(view, _random_shape(rng))
    if rng.random() < 0.5:
        unit = unit.mirrored()
    car = _place(unit, rng, canvas)
    palette = _palette(rng)
    image = _background(rng, canvas, car)
    light = _unit_vector(rng.uniform(-0.8, 0.8), -1.0)
    cv = _Canvas(image, _id_map(car, canvas), car, palette, _wheel_style(rng, palette), light)
    _draw_car(cv, rng)
    return cv


def _unit_vector(x: float, y: float) -> Point:
    n = math.hypot(x, y)
    return (x / n, y / n)


def _choice(rng: np.random.Generator, weights: Mapping[str, float], order: Sequence[str]) -> str:
    """Weighted pick in a fixed key order, so equal mappings draw alike whatever their order."""
    keys = [k for k in order if weights.get(k, 0.0) > 0]
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _car_bounds(car: CarLayout) -> tuple[float, float, float, float]:
    xs = [x for p in car.parts for x, _ in p.poly]
    ys = [y for p in car.parts for _, y in p.poly]
    return min(xs), min(ys), max(xs), max(ys)


def _background(rng: np.random.Generator, size: int, car: CarLayout) -> Image.Image:
    """Sky and ground, a wall, or a studio backdrop, then clutter and the car's soft shadow."""
    x0, _, x1, ground = _car_bounds(car)
    kind = rng.choice(["outdoor", "wall", "studio"])
    if kind == "outdoor":
        horizon = rng.uniform(0.15, 0.9) * max(0.2 * size, ground - 0.05 * size)
        sky = _hsv(rng.uniform(0.52, 0.64), rng.uniform(0.05, 0.5), rng.uniform(0.65, 1.0))
        ground_c = _hsv(rng.uniform(0.05, 0.35), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.6))
        column = _two_tone(
            size, horizon, (sky, _mix(sky, _WHITE, 0.4)), (ground_c, _mix(ground_c, _BLACK, 0.3))
        )
    elif kind == "wall":
        floor = ground - rng.uniform(0.0, 0.2) * size
        wall = _hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.35, 0.95))
        floor_c = _grey(rng.uniform(60, 170))
        column = _two_tone(
            size, floor, (wall, _mix(wall, _BLACK, 0.15)), (floor_c, _mix(floor_c, _BLACK, 0.25))
        )
    else:
        top, bottom = _grey(rng.uniform(120, 240)), _grey(rng.uniform(60, 200))
        column = np.linspace(top, bottom, size, dtype=np.float32)
    image = Image.fromarray(np.repeat(column[:, None, :], size, axis=1).astype(np.uint8))
    _clutter(ImageDraw.Draw(image), rng, size, wall_lines=kind == "wall")
    return _shadow(image, rng, ((x0 + x1) / 2, ground), (x1 - x0) / 2)


def _two_tone(size: int, split: float, top: tuple[RGB, RGB], bottom: tuple[RGB, RGB]) -> np.ndarray:
    """A vertical gradient above ``split`` and another below: sky over ground, wall over floor."""
    split = int(np.clip(split, 1, size - 1))
    return np.concatenate(
        [
            np.linspace(*top, split, dtype=np.float32),
            np.linspace(*bottom, size - split, dtype=np.float32),
        ]
    )


def _clutter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, wall_lines: bool
) -> None:
    """Wall stripes and a few random shapes behind the car, in any colour."""
    if wall_lines and rng.random() < 0.6:
        step = rng.uniform(0.04, 0.12) * size
        colour = _grey(rng.uniform(40, 200))
        for y in np.arange(rng.uniform(0, step), size, step):
            draw.line([(0, y), (size, y)], fill=colour, width=max(1, int(size / 200)))
    for _ in range(int(rng.integers(0, 3))):
        colour = _hsv(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.2, 0.95))
        cx, cy = rng.uniform(0, size, 2)
        w, h = rng.uniform(0.03, 0.35, 2) * size
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=colour)
        elif shape == 1:
            draw.ellipse([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=colour)
        else:
            draw.polygon(
                [tuple(p) for p in rng.uniform(-0.5, 0.5, (3, 2)) * (w, h) + (cx, cy)], fill=colour
            )


def _shadow(
    image: Image.Image, rng: np.random.Generator, foot: Point, half_width: float
) -> Image.Image:
    """A soft dark ellipse under the car, drawn small and blurred (cheap), then scaled up."""
    small = 4
    size = image.width // small
    mask = Image.new("L", (size, size), 0)
    x, y = foot[0] / small, foot[1] / small
    rx, ry = 1.05 * half_width / small, rng.uniform(0.05, 0.1) * half_width / small
    ImageDraw.Draw(mask).ellipse([x - rx, y - ry, x + rx, y + ry * 0.6], fill=255)
    strength = rng.uniform(0.35, 0.65)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, ry))).point(lambda v: v * strength)
    black = Image.new("RGB", image.size, _BLACK)
    return Image.composite(black, image, mask.resize(image.size, Image.BILINEAR))


def _id_map(car: CarLayout, size: int) -> np.ndarray:
    ids = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    for i, part in enumerate(car.parts):
        draw.polygon(part.poly, fill=i + 1)
    return np.asarray(ids)


def _draw_car(cv: _Canvas, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(cv.image)
    slant = rng.uniform(0.3, 0.9) * rng.choice([-1, 1])  # one sun: all streaks lean alike
    for part in cv.car.parts:
        if part.role == "wheel":
            _draw_wheel(draw, cv.car.wheel(part.name), cv.wheel_style)
            continue
        draw.polygon(part.poly, fill=cv.palette[part.role])
        if part.role == "glass":
            _draw_reflections(draw, rng, part, cv.palette["glass"], slant)


def _draw_reflections(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, part: Part, glass: RGB, slant: float
) -> None:
    """Bright slanted streaks (and rear-window heater lines): light lines on undamaged glass."""
    xs, ys = [p[0] for p in part.poly], [p[1] for p in part.poly]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    w, h = x1 - x0, y1 - y0
    for _ in range(int(rng.integers(0, 2))):
        u, width = rng.uniform(0, 1) * w + x0, rng.uniform(0.05, 0.25) * w
        dx = slant * h
        streak = _clip(((u, y0), (u + width, y0), (u + width + dx, y1), (u + dx, y1)), part.poly)
        if streak:
            draw.polygon(streak, fill=_mix(glass, _WHITE, rng.uniform(0.12, 0.4)))
    if part.name.endswith("rear_window") and rng.random() < 0.5:
        colour = _mix(glass, (170, 140, 110), 0.5)
        for y in np.linspace(y0 + 0.25 * h, y1 - 0.15 * h, int(rng.integers(3, 7))):
            line = _clip(_rect(x0, y, x1, y + 1), part.poly)
            if line:
                draw.polygon(line, fill=colour)


def _draw_wheel(
    draw: ImageDraw.ImageDraw,
    wheel: Wheel,
    style: _WheelStyle,
    flat: float = 0.0,
    bend: float = 0.0,
    missing: int = 0,
    bend_at: float = 0.0,
) -> Box:
    """Tyre, rim, spokes and hub; a flat tyre bulges and sinks the rim, a bent rim caves in
    near ``bend_at`` and loses its nearest spokes. Returns the tyre's pixel box."""
    cx, cy = wheel.center
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    down = np.clip(np.sin(t), 0, None)  # image y grows downwards: the tyre's lower half
    tx = cx + wheel.rx * np.cos(t) * (1 + 0.6 * flat * down)
    ty = np.minimum(cy + wheel.ry * np.sin(t) * (1 + 0.8 * flat * down), cy + 0.97 * wheel.ry)
    draw.polygon(list(zip(tx.tolist(), ty.tolist(), strict=True)), fill=style.tyre)
    rx, ry = wheel.rx * style.rim_frac, wheel.ry * style.rim_frac
    cy += 0.6 * flat * flat * (wheel.ry - ry)  # the rim sinks into a flat tyre

    def profile(angles: np.ndarray) -> np.ndarray:  # rim radius factor: kinked near bend_at
        def bump(at: float) -> np.ndarray:
            return np.exp(-(np.angle(np.exp(1j * (angles - at))) ** 2) / 0.15)

        return 1 + bend * (0.5 * bump(bend_at - 0.4) - 0.6 * bump(bend_at + 0.4))

    draw.polygon(_arc(cx, cy, rx * profile(t), ry * profile(t), t), fill=style.rim)
    _draw_spokes(draw, (cx, cy, rx, ry), style, missing, bend_at, profile)
    draw.ellipse([cx - 0.22 * rx, cy - 0.22 * ry, cx + 0.22 * rx, cy + 0.22 * ry], fill=style.hole)
    return (int(tx.min()) - 1, int(ty.min()) - 1, math.ceil(tx.max()) + 2, math.ceil(ty.max()) + 2)


def _arc(
    cx: float, cy: float, rx: float | np.ndarray, ry: float | np.ndarray, t: np.ndarray
) -> list[Point]:
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))


def _draw_spokes(
    draw: ImageDraw.ImageDraw,
    rim: tuple[float, float, float, float],
    style: _WheelStyle,
    missing: int,
    bend_at: float,
    profile: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Dark openings between spokes, inside a rim band that follows a bent rim's outline; a
    missing spoke merges two openings into one wide gap."""
    cx, cy, rx, ry = rim
    if style.spokes == 0:  # hubcap: a ring, and a broken-off piece where it is damaged
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        draw.line(
            _arc(cx, cy, 0.75 * rx * profile(t), 0.75 * ry * profile(t), t) * 2,
            fill=_mix(style.rim, _BLACK, 0.35),
            width=_SUPERSAMPLE,
        )
        if missing:
            t = bend_at + np.linspace(-1, 1, 9) * (0.35 + 0.3 * missing)
            band = 0.75 * profile(t)
            draw.polygon([(cx, cy), *_arc(cx, cy, rx * band, ry * band, t)], fill=style.hole)
        return
    n = style.spokes
    angles = style.phase + 2 * np.pi * np.arange(n) / n
    gone = set(np.argsort(np.abs(np.angle(np.exp(1j * (angles - bend_at)))))[:missing].tolist())
    kept = [a for i, a in enumerate(angles) if i not in gone]
    half = 0.18 * 2 * np.pi / n  # half a spoke's angular width
    for a, b in zip(kept, [*kept[1:], kept[0] + 2 * np.pi], strict=True):
        t = np.linspace(a + half, b - half, 6 + 2 * len(gone))
        band = np.maximum(profile(t) - 0.2, 0.36)
        outer = _arc(cx, cy, band * rx, band * ry, t)
        inner = _arc(cx, cy, 0.32 * rx, 0.32 * ry, t[::-1])
        draw.polygon(outer + inner, fill=style.hole)


# --------------------------------------------------------------------------- damage


@dataclass(frozen=True)
class _Plan:
    """A damage decided but not drawn yet."""

    kind: str
    style: str
    part: int  # index into car.parts
    center: Point  # render pixels
    size: float
    limit: float  # largest size it may take: a crack is no larger than its window
    heavy: float  # 0 to 1, how violent it looks: creases, torn metal, shattered glass, ...
    seed: int  # its look's own random stream: redrawn at another size, it looks alike

    def scaled(self, factor: float) -> _Plan:
        lo = _SIZE_RANGE[self.kind][0]
        return replace(self, size=float(np.clip(self.size * factor, lo, self.limit)))


def _damage_car(rng: np.random.Generator, cv: _Canvas, freq: SynthFrequencies) -> list[Damage]:
    """Pick a severity, then draw damages whose measured extent falls in its band.

    The sizes are a first guess; the damages are redrawn larger or smaller until the share of
    the car they visibly changed lands in the band (a dent on a black car must be larger to
    show as much as one on a white car). Where no plan gets there, the nearest one stays: the
    label always follows the extent measured on what was drawn.
    """
    if rng.random() < freq.p_undamaged:
        return []
    target = _choice(rng, freq.severity, SEVERITIES)
    kinds = {
        k: w
        for k, w in freq.damage_types.items()
        if len(cv.shown(lambda p, k=k: p.surface == _SURFACE[k]))
    }
    if not any(w > 0 for w in kinds.values()):
        return []
    weights = np.array(_COUNT_WEIGHTS[target][: freq.max_damages])
    count = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    band = _BANDS[target]
    clean = cv.image.copy()
    best: tuple[float, list[_Plan]] | None = None
    for n in range(count, 0, -1):  # fewer damages if that many do not fit on the car
        for attempt in range(_PLAN_TRIES):
            if attempt % _KIND_TRIES == 0:  # new kinds only when these keep failing: no kind is
                picked = [_choice(rng, kinds, DAMAGE_TYPES) for _ in range(n)]  # favoured
            goal = math.exp(rng.uniform(*np.log(band)))
            plans = _try_plan(rng, cv, picked, goal, _HEAVY[target])
            if not plans:
                continue
            damages, plans = _draw_fitted(cv, clean, plans, goal, band)
            extent = damage_extent(damages)
            if band[0] <= extent <= band[1] and all(d.area > 0 for d in damages):
                return damages
            miss = abs(math.log(max(extent, 1e-6) / goal))
            if best is None or miss < best[0]:
                best = (miss, plans)
            cv.image.paste(clean)
    if best is None:
        return []
    # the nearest plan; a damage that shows nothing is left out (and its faint trace wiped)
    visible = [p for p, d in zip(best[1], _draw_all(cv, best[1]), strict=True) if d.area > 0]
    cv.image.paste(clean)
    return _draw_all(cv, visible)


def _draw_all(cv: _Canvas, plans: list[_Plan]) -> list[Damage]:
    return [_draw_damage(cv, plan) for plan in plans]


def _draw_fitted(
    cv: _Canvas, clean: Image.Image, plans: list[_Plan], goal: float, band: tuple[float, float]
) -> tuple[list[Damage], list[_Plan]]:
    """Draw the plans, rescaled until their measured extent is in ``band`` (or stops moving)."""
    damages: list[Damage] = []
    for step in range(_FIT_STEPS):
        if step:
            cv.image.paste(clean)
        damages = _draw_all(cv, plans)
        extent = damage_extent(damages)
        if band[0] <= extent <= band[1]:
            break
        # resize the damages that can still change: those not at their size limit
        grow = goal > extent
        free = [plan.scaled(2.0 if grow else 0.5) != plan for plan in plans]
        share = sum(d.area for d, ok in zip(damages, free, strict=True) if ok)
        want = max(share + goal - extent, 0.25 * share)
        factor = math.sqrt(want / share) if share > 0 else (2.0 if grow else 0.5)
        rescaled = [
            plan.scaled(factor) if ok else plan for plan, ok in zip(plans, free, strict=True)
        ]
        if rescaled == plans:
            break
        plans = rescaled
    return damages, plans


def _draw_damage(cv: _Canvas, plan: _Plan) -> Damage:
    """Paint one damage and measure it: the share of the car's pixels it visibly changed."""
    before = np.asarray(cv.image)
    box = _PAINTERS[plan.kind](cv, plan, np.random.default_rng(plan.seed))
    w = cv.image.width
    x0, y0, x1, y1 = box = (max(0, box[0]), max(0, box[1]), min(w, box[2]), min(w, box[3]))
    after = np.asarray(cv.image.crop(box))
    diff = np.abs(after.astype(np.int16) - before[y0:y1, x0:x1])
    changed = (diff[..., 0] > _VISIBLE) | (diff[..., 1] > _VISIBLE) | (diff[..., 2] > _VISIBLE)
    # a thin line counts with its edges (what the eye, and a network, sees of it)
    grown = changed.copy()
    grown[1:] |= changed[:-1]
    grown[:-1] |= changed[1:]
    changed = grown.copy()
    changed[:, 1:] |= grown[:, :-1]
    changed[:, :-1] |= grown[:, 1:]
    area = np.count_nonzero(changed) / cv.car_pixels
    part = cv.car.parts[plan.part]
    s = _SUPERSAMPLE
    return Damage(
        plan.kind,
        plan.style,
        part.location,
        part.name,
        plan.size,
        (plan.center[0] / s, plan.center[1] / s),
        _output_box(box, cv.image.width // s),
        round(area, 5),
    )


def _try_plan(
    rng: np.random.Generator,
    cv: _Canvas,
    kinds: list[str],
    goal: float,
    heavy: tuple[float, float],
) -> list[_Plan]:
    """Sites for the damages, first-guess sizes for a summed extent near ``goal``, and looks
    as violent as ``heavy`` says."""
    sites: list[tuple[int, Point]] = []
    for kind in kinds:
        site = _site(rng, cv, kind, sites)
        if site is None:
            return []
        sites.append(site)
    plans = []
    for kind, (part, center) in zip(kinds, sites, strict=True):
        guess = math.sqrt(goal / len(kinds) / _AREA_PER_SIZE2[kind]) * rng.uniform(0.8, 1.25)
        style = _choice(rng, _STYLES[kind], list(_STYLES[kind]))
        limit = _size_limit(cv, kind, part)
        heaviness = float(rng.uniform(*heavy))
        plan = _Plan(kind, style, part, center, guess, limit, heaviness, int(rng.integers(2**32)))
        plans.append(plan.scaled(1.0))
    return plans


def _size_limit(cv: _Canvas, kind: str, part: int) -> float:
    """The largest size a damage may be fitted to; a crack spans at most its window."""
    hi = _SIZE_RANGE[kind][1]
    if kind == "glass":
        xs, ys = zip(*cv.car.parts[part].poly, strict=True)
        hi = min(hi, 1.2 * max(max(xs) - min(xs), max(ys) - min(ys)) / cv.car.width)
    return max(hi, _SIZE_RANGE[kind][0])


def _site(
    rng: np.random.Generator, cv: _Canvas, kind: str, taken: list[tuple[int, Point]]
) -> tuple[int, Point] | None:
    """A part and a point on it, inside the part and apart from the damages already placed."""
    surface = _SURFACE[kind]
    if surface == "wheel":
        size = cv.image.width
        free = [
            i - 1
            for i in cv.shown(lambda p: p.surface == "wheel")
            if i - 1 not in {t for t, _ in taken}
            and all(0 <= c < size for c in cv.car.wheel(cv.car.parts[i - 1].name).center)
        ]
        if not free:
            return None
        part = free[int(rng.integers(len(free)))]
        return part, cv.car.wheel(cv.car.parts[part].name).center
    candidates = np.flatnonzero(cv.lut(cv.part_ids(lambda p: p.surface == surface))[cv.ids])
    if not len(candidates):
        return None
    size, reach = cv.ids.shape[1], 0.025 * cv.car.width
    for index in rng.choice(candidates, 16):
        y, x = divmod(int(index), size)
        part = int(cv.ids[y, x]) - 1
        same = cv.lut(_same_group(cv, part))
        probes = np.array([(x + reach, y), (x - reach, y), (x, y + reach), (x, y - reach)])
        px, py = np.clip(probes, 0, size - 1).astype(int).T
        inside = bool(same[cv.ids[py, px]].all())
        apart = all(math.dist((x, y), c) > 0.1 * cv.car.width for _, c in taken)
        if inside and apart:
            return part, (float(x), float(y))
    return None


def _same_group(cv: _Canvas, part: int) -> np.ndarray:
    """Pixels a damage on ``part`` may paint: its window, or the body panels of its location."""
    target = cv.car.parts[part]
    if target.surface == "body":
        return cv.part_ids(lambda p: p.surface == "body" and p.location == target.location)
    return np.array([part + 1])


def _paint_dent(cv: _Canvas, plan: _Plan, rng: np.random.Generator) -> Box:
    """A shaded hollow: dark on the side towards the light, a highlight opposite, and the panel
    lines crossing it pulled inwards."""
    a = plan.size * cv.car.width / 2
    b, phi = a * rng.uniform(0.55, 0.9), rng.uniform(0, np.pi)
    box = cv.box(plan.center, 1.3 * a)
    yy, xx = np.mgrid[box[1] : box[3], box[0] : box[2]].astype(np.float32)
    xx -= plan.center[0]
    yy -= plan.center[1]
    p = (xx * math.cos(phi) + yy * math.sin(phi)) / a
    q = (-xx * math.sin(phi) + yy * math.cos(phi)) / b
    r2 = p * p + q * q
    g = np.exp(-2.5 * r2 * r2)
    gy, gx = np.gradient(g)
    h = plan.heavy
    depth = rng.uniform(0.8, 1.1) + 0.4 * h
    shade = np.clip((gx * cv.light[0] + gy * cv.light[1]) * a * depth, -0.85, 0.85)
    pixels = cv.pixels(box)
    pull = 1 - rng.uniform(0.3, 0.45) * g
    sx = np.clip(np.rint(xx * pull + plan.center[0] - box[0]), 0, pixels.shape[1] - 1).astype(int)
    sy = np.clip(np.rint(yy * pull + plan.center[1] - box[1]), 0, pixels.shape[0] - 1).astype(int)
    warped, s = pixels[sy, sx], shade[..., None]
    out = np.where(s < 0, warped * (1 + s), warped + 0.7 * s * (255 - warped))
    patch = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(patch)
    center = (plan.center[0] - box[0], plan.center[1] - box[1])
    creases = 1 + round(5 * h + rng.uniform(0, 1))
    _draw_creases(
        draw, rng, center, a, b, phi, cv.palette["body"], cv.light, cv.line_width, creases
    )
    if h > 0.45:  # torn metal: dark slits where the panel split
        for _ in range(int(rng.integers(1, 2 + round(2 * h)))):
            c = np.asarray(center) + rng.normal(0, 0.25, 2) * (a, b)
            along = rng.uniform(0, np.pi)
            d = np.array([math.cos(along), math.sin(along)]) * a * rng.uniform(0.15, 0.35)
            n = np.array([-d[1], d[0]]) * rng.uniform(0.12, 0.25)
            slit = [c - d, c - 0.3 * d + n, c + 0.2 * d + 0.6 * n, c + d, c + 0.1 * d - 0.5 * n]
            draw.polygon([tuple(p) for p in slit], fill=_mix(cv.palette["body"], _BLACK, 0.85))
    cv.put(box, patch, _same_group(cv, plan.part))
    return box


def _draw_creases(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    center: Point,
    a: float,
    b: float,
    phi: float,
    body: RGB,
    light: Point,
    width: int,
    count: int,
) -> None:
    """Folds in the crumpled metal: jagged dark lines, each lit along one edge."""
    dark, bright = _mix(body, _BLACK, 0.65), _mix(body, _WHITE, 0.6)
    u = np.array([math.cos(phi), math.sin(phi)])
    v = np.array([-u[1], u[0]])
    offset = np.array(light) * width
    for _ in range(count):
        t = np.linspace(-1, 1, 5) * rng.uniform(0.4, 0.8)
        s = rng.uniform(-0.5, 0.5) + rng.normal(0, 0.12, 5)
        turn = rng.uniform(0, np.pi)
        d1, d2 = math.cos(turn), math.sin(turn)
        pts = [
            tuple(center + a * (d1 * x - d2 * y) * u + b * (d2 * x + d1 * y) * v)
            for x, y in zip(t, s, strict=True)
        ]
        draw.line([(x - offset[0], y - offset[1]) for x, y in pts], fill=bright, width=width)
        draw.line(pts, fill=dark, width=width)


def _paint_glass(cv: _Canvas, plan: _Plan, rng: np.random.Generator) -> Box:
    """A spider web: jagged lines radiating from an impact point, joined by broken rings."""
    radius = plan.size * cv.car.width / 2
    box = cv.box(plan.center, radius + 2 * cv.line_width)
    patch = cv.image.crop(box)
    draw = ImageDraw.Draw(patch)
    cx, cy = plan.center[0] - box[0], plan.center[1] - box[1]
    glass = cv.palette["glass"]
    halo = 0.22 * radius
    draw.ellipse([cx - halo, cy - halo, cx + halo, cy + halo], fill=_mix(glass, _WHITE, 0.6))
    h = plan.heavy
    n = 5 + round(10 * h) + int(rng.integers(0, 3))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi)
    lengths = radius * rng.uniform(0.7, 1.0, n)
    steps = np.array([0.0, 0.35, 0.7, 1.0])
    rays = []
    for angle, length in zip(angles, lengths, strict=True):
        a = angle + np.concatenate([[0.0], rng.normal(0, 0.1, 3)])
        ray = list(
            zip(
                (cx + steps * length * np.cos(a)).tolist(),
                (cy + steps * length * np.sin(a)).tolist(),
                strict=True,
            )
        )
        draw.line(ray, fill=_grey(rng.uniform(220, 255)), width=2 * cv.line_width)
        rays.append(a)
    if h > 0.5:  # shattered: milky chunks between the inner cracks
        for j in range(n):
            if rng.random() < h - 0.3:
                k = (j + 1) % n
                r0, r1 = 0.25 * radius, rng.uniform(0.45, 0.75) * radius
                chunk = [
                    (cx + r * math.cos(rays[i][1]), cy + r * math.sin(rays[i][1]))
                    for i, r in ((j, r0), (j, r1), (k, r1), (k, r0))
                ]
                draw.polygon(chunk, fill=_mix(glass, _WHITE, rng.uniform(0.25, 0.45)))
    for ring in rng.choice(
        [0.3, 0.55, 0.8], 1 + min(2, round(2 * h + rng.uniform(0, 0.6))), replace=False
    ):
        r = ring * radius
        for j in range(n):
            k = (j + 1) % n
            if min(lengths[j], lengths[k]) >= r and rng.random() < 0.75:
                ends = [
                    (cx + r * math.cos(rays[i][2]), cy + r * math.sin(rays[i][2])) for i in (j, k)
                ]
                draw.line(ends, fill=_grey(rng.uniform(210, 250)), width=cv.line_width)
    dot = max(cv.line_width, 0.06 * radius)
    draw.ellipse([cx - dot, cy - dot, cx + dot, cy + dot], fill=_WHITE)
    cv.put(box, patch, _same_group(cv, plan.part))
    return box


def _paint_paint(cv: _Canvas, plan: _Plan, rng: np.random.Generator) -> Box:
    """Scratches (thin roughly parallel strokes) and/or paint loss (an irregular primer patch)."""
    length = plan.size * cv.car.width
    box = cv.box(plan.center, 0.6 * length + 2 * cv.line_width)
    patch = cv.image.crop(box)
    draw = ImageDraw.Draw(patch)
    center = (plan.center[0] - box[0], plan.center[1] - box[1])
    colours = _contrasting(cv.palette["body"])
    if "loss" in plan.style:
        radius = length * (0.35 if plan.style == "loss" else 0.25)
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        wobble = np.convolve(np.tile(rng.uniform(0.5, 1.3, 28), 3), np.ones(3) / 3, "same")[28:56]
        wobble *= rng.uniform(0.75, 1.15, 28)  # flaking: a ragged edge
        squash = rng.uniform(0.5, 1.0)
        blob = _arc(*center, radius * wobble, radius * wobble * squash, t)
        fill = colours[rng.integers(len(colours))]
        draw.polygon(
            blob, fill=fill, outline=_mix(cv.palette["body"], _BLACK, 0.5), width=cv.line_width
        )
        # flakes: primer specks around the patch, paint left inside it
        for _ in range(4 + round(12 * plan.heavy)):
            r, t0 = radius * rng.uniform(0.3, 1.4), rng.uniform(0, 2 * np.pi)
            x, y = center[0] + r * math.cos(t0), center[1] + r * squash * math.sin(t0)
            dot = cv.line_width * rng.uniform(0.7, 1.5)
            draw.ellipse(
                [x - dot, y - dot, x + dot, y + dot],
                fill=fill if r > radius else cv.palette["body"],
            )
    if "scratch" in plan.style:
        _draw_scratches(
            draw,
            rng,
            center,
            length,
            colours,
            cv.line_width,
            3 + round(8 * plan.heavy) + int(rng.integers(0, 3)),
        )
    cv.put(box, patch, _same_group(cv, plan.part))
    return box


def _draw_scratches(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    center: Point,
    length: float,
    colours: list[RGB],
    width: int,
    count: int,
) -> None:
    angle = rng.normal(0, 0.35)
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]])
    spread = length * rng.uniform(0.08, 0.22)
    colour = colours[rng.integers(len(colours))]
    for _ in range(count):
        t = np.linspace(-rng.uniform(0.35, 0.5), rng.uniform(0.35, 0.5), 7) * length
        offset = rng.uniform(-spread, spread) + rng.normal(0, 0.02 * length, 7)
        pts = np.asarray(center) + t[:, None] * along + offset[:, None] * across
        draw.line(
            [tuple(p) for p in pts.tolist()],
            fill=colour,
            width=width if rng.random() < 0.3 else 2 * width,
        )


def _contrasting(body: RGB) -> list[RGB]:
    """Scratch and primer colours that stand out from the body colour (white on dark, ...)."""
    candidates = [(238, 238, 234), *_PRIMERS]
    far = [c for c in candidates if abs(_luma(c) - _luma(body)) > 55]
    return far or [max(candidates, key=lambda c: abs(_luma(c) - _luma(body)))]


def _paint_wheel(cv: _Canvas, plan: _Plan, rng: np.random.Generator) -> Box:
    """A flat tyre (squashed, its sidewall folded), a blown one (the bare rim on the road in
    shreds of rubber, strips of it beside) and/or a bent rim missing spokes, scraped bright."""
    lo, hi = _SIZE_RANGE["wheel"]
    f = float(np.clip((plan.size - lo) / (hi - lo), 0, 1))
    wheel = cv.car.wheel(cv.car.parts[plan.part].name)
    rim, blown = "rim" in plan.style, "blown" in plan.style
    reach = max(wheel.rx, wheel.ry)
    box = cv.box(wheel.center, 2.4 * reach if blown else 1.6 * reach)
    patch = cv.image.crop(box)
    local = replace(wheel, center=(wheel.center[0] - box[0], wheel.center[1] - box[1]))
    style = cv.wheel_style
    if blown:  # the tyre torn away: a wider, brighter rim
        style = replace(style, rim_frac=0.7 + 0.15 * f, rim=_mix(style.rim, _WHITE, 0.3))
    draw = ImageDraw.Draw(patch)
    drawn = _draw_wheel(
        draw,
        local,
        style,
        flat=0.15 + 0.85 * f if "flat" in plan.style or blown else 0.0,
        bend=0.15 + 0.85 * f if rim else 0.0,
        missing=round(0.5 + 3 * f) if rim else 0,
        bend_at=rng.uniform(0, 2 * np.pi),
    )
    cx, cy = local.center
    width = cv.line_width
    if "flat" in plan.style:  # folds in the squashed sidewall
        fold = _mix(style.tyre, _WHITE, 0.5)
        for k in range(2):
            r = (0.8 + 0.12 * k) * local.rx
            t = np.linspace(0.25 * np.pi, 0.75 * np.pi, 8)
            draw.line(_arc(cx, cy + 0.15 * local.ry, 1.25 * r, 0.7 * r, t), fill=fold, width=width)
    if rim or blown:  # bare metal where the rim scraped the road
        t = rng.uniform(0, 2 * np.pi) + np.linspace(0, rng.uniform(1.5, 3.0) + 3 * blown, 16)
        r = style.rim_frac
        draw.line(_arc(cx, cy, r * local.rx, r * local.ry, t), fill=_grey(240), width=2 * width)
    if blown:
        _draw_shreds(draw, rng, local, style, f, width)
        drawn = (0, 0, patch.width, patch.height)
    cv.put(box, patch, np.arange(plan.part + 2))  # the wheel and what lies under it
    return (drawn[0] + box[0], drawn[1] + box[1], drawn[2] + box[0], drawn[3] + box[1])


def _draw_shreds(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    wheel: Wheel,
    style: _WheelStyle,
    f: float,
    width: int,
) -> None:
    """Rubber torn into the rim's edge, and strips of it lying on the road beside the wheel."""
    cx, cy = wheel.center
    rx, ry = wheel.rx, wheel.ry
    for a in rng.uniform(0, 2 * np.pi, int(rng.integers(4, 8))):
        spread = rng.uniform(0.15, 0.35)
        inner = style.rim_frac * rng.uniform(0.75, 0.9)
        tip = (cx + inner * rx * math.cos(a), cy + inner * ry * math.sin(a))
        base = [
            (cx + 1.02 * rx * math.cos(a + d), cy + 1.02 * ry * math.sin(a + d))
            for d in (-spread, spread)
        ]
        draw.polygon([base[0], tip, base[1]], fill=style.tyre)
    ground = cy + 0.97 * ry
    for _ in range(int(rng.integers(2, 4 + round(2 * f)))):
        x = cx + rng.choice([-1, 1]) * rx * rng.uniform(1.0, 2.2)
        length, lift = rx * rng.uniform(0.5, 1.1), ry * rng.uniform(-0.15, 0.05)
        tilt = rng.normal(0, 0.25)
        pts = [
            (
                x + s * length / 2 * math.cos(tilt),
                ground + lift + s * length / 2 * math.sin(tilt) + rng.normal(0, 0.05 * ry),
            )
            for s in np.linspace(-1, 1, 4)
        ]
        draw.line(pts, fill=style.tyre, width=int(rng.integers(2, 4)) * width)


_PAINTERS: dict[str, Callable[[_Canvas, _Plan, np.random.Generator], Box]] = {
    "dent": _paint_dent,
    "glass": _paint_glass,
    "paint": _paint_paint,
    "wheel": _paint_wheel,
}


# --------------------------------------------------------------------------- photo


def _finish(image: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """Camera effects at output size: blur, global brightness and colour cast, a light gradient,
    sensor noise."""
    image = image.resize((size, size), Image.BOX)
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.9) * size / 224))
    pixels = np.asarray(image, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    gradient = 1 + rng.uniform(0, 0.3) * (
        math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    )
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    pixels = pixels * gradient[..., None] * gain
    pixels += rng.uniform(0, 5) * rng.standard_normal(pixels.shape, dtype=np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _output_box(box: Box, size: int) -> Box:
    x0, y0, x1, y1 = box
    s = _SUPERSAMPLE
    return (max(0, x0 // s), max(0, y0 // s), min(size, -(-x1 // s)), min(size, -(-y1 // s)))


def draw_sample(
    rng: np.random.Generator, size: int = 224, frequencies: SynthFrequencies | None = None
) -> SynthSample:
    """One photo and its labels. The same generator state gives the same sample."""
    freq = frequencies or SynthFrequencies()
    scene_rng, damage_rng, finish_rng = rng.spawn(3)
    cv = _draw_scene(scene_rng, size * _SUPERSAMPLE, freq.views)
    damages = _damage_car(damage_rng, cv, freq)
    return SynthSample(
        image=_finish(cv.image, size, finish_rng),
        severity=severity_for_extent(damage_extent(damages)),
        location=tuple(loc for loc in LOCATIONS if any(d.location == loc for d in damages)),
        damage_type=tuple(k for k in DAMAGE_TYPES if any(d.kind == k for d in damages)),
        damages=tuple(damages),
        view=cv.car.view,
    )


def _write_sample(
    out_dir: Path, name: str, i: int, seed: int, size: int, frequencies: SynthFrequencies | None
) -> tuple[str, str, str, str]:
    """Draw sample i, write its JPEG, return its manifest row."""
    rng = np.random.default_rng([seed, i])
    sample = draw_sample(rng, size, frequencies)
    with atomic_path(out_dir / name) as tmp:
        sample.image.save(tmp, format="JPEG", quality=int(rng.integers(70, 96)))
    return (
        name,
        sample.severity,
        LABEL_SEPARATOR.join(sample.location),
        LABEL_SEPARATOR.join(sample.damage_type),
    )


def generate_dataset(
    out_dir: Path,
    n: int = 1825,
    size: int = 224,
    seed: int = 0,
    frequencies: SynthFrequencies | None = None,
    progress: bool = False,
    workers: int = 1,
) -> Path:
    """Writes out_dir/images/<id>.jpg and out_dir/labels.csv, returns the manifest path.

    Sample i depends only on (seed, i, size, frequencies): a larger n adds images, never
    changes the others, and the number of worker processes changes nothing but the speed.
    Workers are spawned processes: a script that asks for more than one must guard its top
    level with ``if __name__ == "__main__":``.
    """
    out_dir = Path(out_dir)
    digits = max(5, len(str(n)))
    names = [f"images/{i + 1:0{digits}d}.jpg" for i in range(n)]
    draw = partial(_write_sample, out_dir, seed=seed, size=size, frequencies=frequencies)
    rows = list(
        tqdm(
            _drawn_rows(draw, names, min(workers, max(1, n // 64))),
            total=n,
            desc="synthetic images",
            unit="img",
            disable=not progress,
        )
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    writer.writerows(rows)
    manifest = out_dir / "labels.csv"
    atomic_write_text(manifest, buffer.getvalue())
    return manifest


def _drawn_rows(
    draw: Callable[[str, int], tuple[str, ...]], names: list[str], workers: int
) -> Iterator[tuple[str, ...]]:
    """Manifest rows in order, drawn here or by ``workers`` processes."""
    if workers == 1:
        yield from map(draw, names, range(len(names)))
        return
    chunk = max(1, len(names) // (8 * workers))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(draw, names, range(len(names)), chunksize=chunk)
