"""Plane geometry of the drawn car: parts as polygons, wheels, layouts, and polygon helpers."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

Point = tuple[float, float]
Poly = tuple[Point, ...]
Box = tuple[int, int, int, int]


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


def rect(x0: float, y0: float, x1: float, y1: float) -> Poly:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> Poly:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return tuple(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))


def bar(p0: Point, p1: Point, w: float) -> Poly:
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


def mirror_x(poly: Poly) -> Poly:
    return tuple((1.0 - x, y) for x, y in poly)


def clip(poly: Poly, window: Poly) -> Poly:
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


def arc(
    cx: float, cy: float, rx: float | np.ndarray, ry: float | np.ndarray, t: np.ndarray
) -> list[Point]:
    """Points of an ellipse at angles ``t``; radii given per angle draw bent rims and ragged
    patches."""
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist(), strict=True))
