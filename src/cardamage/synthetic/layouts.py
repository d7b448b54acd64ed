"""The car's views as data: for each view, its parts (name, colour role, location, polygon).

Polygons are in unit coordinates (car width 1) from a random body shape, so one shape gives all
views of the same car; :func:`place` puts a layout in the frame like a camera would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from cardamage.synthetic.geometry import (
    CarLayout,
    Part,
    Point,
    Wheel,
    bar,
    clip,
    ellipse,
    mirror_x,
    rect,
)

#: Car width over frame width: end-on cars are framed whole or nearly; side and three-quarter
#: views, long and low, are close-ups of part of the car (damage photos mostly are).
_ZOOM = {"end": (1.0, 1.4), "long": (1.7, 2.5)}


@dataclass(frozen=True)
class Shape:
    """Body-style proportions of one car, shared by all its views."""

    height: float  # side-view height over length
    belt: float  # belt line (bottom of the windows) as a share of height
    wheel_r: float
    wheel_x: tuple[float, float]
    a_top: float  # where the roof starts (top of the windscreen pillar)
    c_top: float  # where the roof ends
    c_base: float  # foot of the rear pillar
    end_height: float  # front/rear-view height over width


def random_shape(rng: np.random.Generator) -> Shape:
    hatch = rng.random() < 0.4
    return Shape(
        height=rng.uniform(0.3, 0.4),
        belt=rng.uniform(0.4, 0.48),
        wheel_r=rng.uniform(0.078, 0.095),
        wheel_x=(rng.uniform(0.17, 0.21), rng.uniform(0.79, 0.83)),
        a_top=rng.uniform(0.36, 0.42),
        c_top=rng.uniform(0.74, 0.8) if hatch else rng.uniform(0.64, 0.7),
        c_base=rng.uniform(0.9, 0.95) if hatch else rng.uniform(0.8, 0.85),
        end_height=rng.uniform(0.72, 0.86),
    )


def _split_ends(parts: Sequence[Part], front: float = 0.1, rear: float = 0.9) -> list[Part]:
    """Cut side-view panels at the car's ends: the nose is 'front', the tail 'rear'."""
    spans = (("front", -1.0, front), ("side", front, rear), ("rear", rear, 2.0))
    out = []
    for location, x0, x1 in spans:
        for p in parts:
            poly = clip(p.poly, rect(x0, -1.0, x1, 2.0))
            if poly:
                out.append(Part(f"{location}_{p.name}", p.role, location, poly))
    return out


def _side_layout(sh: Shape, ends: bool = True) -> CarLayout:
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
        Part("shine", "body_hi", "side", clip(lower, rect(-1, -1, 2, yb + 0.018))),
        Part("rocker", "body_lo", "side", clip(lower, rect(-1, ybot - 0.03, 2, 2))),
        Part("crease", "seam", "side", bar((0.01, yn + 0.03), (0.99, yt + 0.045), 0.004)),
        *(
            Part(f"seam{i}", "seam", "side", bar((x, yb + 0.008), (x - 0.004, ybot - 0.012), 0.004))
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
        arch = clip(ellipse(x, h - r, 1.18 * r, 1.18 * r), rect(-1, -1, 2, ybot))
        parts.append(Part(f"arch_{name}", "dark", "side", arch))
    for name, x in (("front", xf), ("rear", xr)):
        parts.append(Part(f"wheel_{name}", "wheel", "side", ellipse(x, h - r, r, r)))
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
        Part("bumper_front", "trim", "front", clip(lower, rect(-1, ybot - 0.045, 0.085, 2))),
        Part("bumper_rear", "trim", "rear", clip(lower, rect(0.92, ybot - 0.045, 2, 2))),
        Part("handle_front", "dark", "side", rect(xb - 0.07, yb + 0.03, xb - 0.035, yb + 0.04)),
        Part(
            "handle_rear",
            "dark",
            "side",
            rect(door_rear - 0.06, yb + 0.03, door_rear - 0.025, yb + 0.04),
        ),
    ]
    wheels = tuple(Wheel(f"wheel_{n}", (x, h - r), r, r) for n, x in (("front", xf), ("rear", xr)))
    return CarLayout("side", tuple(p for p in parts if p.poly), wheels, 1.0, h)


def _side_windows(sh: Shape, yb: float, xb: float) -> list[Part]:
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


def _end_layout(sh: Shape, end: str, belt: float) -> CarLayout:
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
        Part("tyre_l", "tyre", end, rect(0.07, ybot - 0.05, 0.19, h)),
        Part("tyre_r", "tyre", end, rect(0.81, ybot - 0.05, 0.93, h)),
        Part("face", "body", end, lower),
        Part("face_shine", "body_hi", end, clip(lower, rect(-1, -1, 2, yb + 0.025))),
        Part("face_seam", "seam", end, bar((0.06, yb + 0.045), (0.94, yb + 0.045), 0.004)),
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
        Part("mirror_r", "body", end, mirror_x(mirror)),
        Part("lamp_l", lamp_role, end, lamp),
        Part("lamp_r", lamp_role, end, mirror_x(lamp)),
        Part("bumper", "trim", end, clip(lower, rect(-1, ybot - 0.1, 2, 2))),
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
        parts.append(Part("plate", "plate", end, rect(0.39, ybot - 0.09, 0.61, ybot - 0.04)))
    else:
        parts.append(Part("plate", "plate", end, rect(0.38, yb + 0.11, 0.62, yb + 0.17)))
    return CarLayout(end, tuple(parts), (), 1.0, h)


_FACE_WIDTH = 0.3  # share of a three-quarter view's width taken by the car's front or rear
_NEAR_CUT = 0.08  # the side view's nose (or tail) hidden behind that face


def _three_quarter_layout(sh: Shape, end: str) -> CarLayout:
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
        if (poly := clip(p.poly, rect(_NEAR_CUT, -1, 2, 2)))
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


#: Each view's layout from a body shape, in the order views are drawn by weight.
_VIEW_LAYOUTS: dict[str, Callable[[Shape], CarLayout]] = {
    "side": _side_layout,
    # end-on, the glasshouse looks shorter
    "front": lambda sh: _end_layout(sh, "front", sh.belt - 0.08),
    "rear": lambda sh: _end_layout(sh, "rear", sh.belt - 0.08),
    "three_quarter_front": partial(_three_quarter_layout, end="front"),
    "three_quarter_rear": partial(_three_quarter_layout, end="rear"),
}
VIEWS = tuple(_VIEW_LAYOUTS)


def unit_layout(view: str, sh: Shape) -> CarLayout:
    """One view of the car of shape ``sh``, width 1."""
    return _VIEW_LAYOUTS[view](sh)


def place(unit: CarLayout, rng: np.random.Generator, canvas: int) -> CarLayout:
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
