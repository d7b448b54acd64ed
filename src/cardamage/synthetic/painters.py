"""Damage painters, one per damage kind: each paints one planned damage on the canvas.

A painter draws on a crop of the photo and copies it back only where the damaged part (or its
location's body panels) is on top, and returns the box it may have changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

from cardamage.synthetic.colours import BLACK, PRIMERS, RGB, WHITE, WheelStyle, grey, luma, mix
from cardamage.synthetic.geometry import Box, Point, Wheel, arc
from cardamage.synthetic.kinds import KINDS
from cardamage.synthetic.scene import Canvas, draw_wheel


@dataclass(frozen=True)
class Plan:
    """A damage decided but not drawn yet."""

    kind: str
    style: str
    part: int  # index into car.parts
    center: Point  # render pixels
    size: float
    limit: float  # largest size it may take: a crack is no larger than its window
    heavy: float  # 0 to 1, how violent it looks: creases, torn metal, shattered glass, ...
    seed: int  # its look's own random stream: redrawn at another size, it looks alike

    def scaled(self, factor: float) -> Plan:
        lo = KINDS[self.kind].size_range[0]
        return replace(self, size=float(np.clip(self.size * factor, lo, self.limit)))


def same_group(cv: Canvas, part: int) -> np.ndarray:
    """Pixels a damage on ``part`` may paint: its window, or the body panels of its location."""
    target = cv.car.parts[part]
    if target.surface == "body":
        return cv.part_ids(lambda p: p.surface == "body" and p.location == target.location)
    return np.array([part + 1])


def _paint_dent(cv: Canvas, plan: Plan, rng: np.random.Generator) -> Box:
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
        _draw_tears(draw, rng, center, (a, b), h, mix(cv.palette["body"], BLACK, 0.85))
    cv.put(box, patch, same_group(cv, plan.part))
    return box


def _draw_tears(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    center: Point,
    axes: tuple[float, float],
    heavy: float,
    colour: RGB,
) -> None:
    """Dark slits in the dent where the panel split, more the heavier the hit."""
    a, b = axes
    for _ in range(int(rng.integers(1, 2 + round(2 * heavy)))):
        c = np.asarray(center) + rng.normal(0, 0.25, 2) * (a, b)
        along = rng.uniform(0, np.pi)
        d = np.array([math.cos(along), math.sin(along)]) * a * rng.uniform(0.15, 0.35)
        n = np.array([-d[1], d[0]]) * rng.uniform(0.12, 0.25)
        slit = [c - d, c - 0.3 * d + n, c + 0.2 * d + 0.6 * n, c + d, c + 0.1 * d - 0.5 * n]
        draw.polygon([tuple(p) for p in slit], fill=colour)


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
    dark, bright = mix(body, BLACK, 0.65), mix(body, WHITE, 0.6)
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


def _paint_glass(cv: Canvas, plan: Plan, rng: np.random.Generator) -> Box:
    """A spider web: jagged lines radiating from an impact point, joined by broken rings."""
    radius = plan.size * cv.car.width / 2
    box = cv.box(plan.center, radius + 2 * cv.line_width)
    patch = cv.image.crop(box)
    draw = ImageDraw.Draw(patch)
    center = (plan.center[0] - box[0], plan.center[1] - box[1])
    cx, cy = center
    glass = cv.palette["glass"]
    halo = 0.22 * radius
    draw.ellipse([cx - halo, cy - halo, cx + halo, cy + halo], fill=mix(glass, WHITE, 0.6))
    h = plan.heavy
    n = 5 + round(10 * h) + int(rng.integers(0, 3))
    angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi)
    lengths = radius * rng.uniform(0.7, 1.0, n)
    rays = _draw_rays(draw, rng, center, angles, lengths, 2 * cv.line_width)
    if h > 0.5:  # shattered: milky chunks between the inner cracks
        _draw_chunks(draw, rng, center, rays, radius, h, glass)
    _draw_rings(draw, rng, center, rays, lengths, radius, h, cv.line_width)
    dot = max(cv.line_width, 0.06 * radius)
    draw.ellipse([cx - dot, cy - dot, cx + dot, cy + dot], fill=WHITE)
    cv.put(box, patch, same_group(cv, plan.part))
    return box


def _draw_rays(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    center: Point,
    angles: np.ndarray,
    lengths: np.ndarray,
    width: int,
) -> list[np.ndarray]:
    """Cracks from the impact point, each kinked at its thirds; returns their angles there."""
    cx, cy = center
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
        draw.line(ray, fill=grey(rng.uniform(220, 255)), width=width)
        rays.append(a)
    return rays


def _draw_chunks(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    center: Point,
    rays: list[np.ndarray],
    radius: float,
    heavy: float,
    glass: RGB,
) -> None:
    """Milky pieces of shattered glass between neighbouring cracks, more the heavier the hit."""
    cx, cy = center
    n = len(rays)
    for j in range(n):
        if rng.random() < heavy - 0.3:
            k = (j + 1) % n
            r0, r1 = 0.25 * radius, rng.uniform(0.45, 0.75) * radius
            chunk = [
                (cx + r * math.cos(rays[i][1]), cy + r * math.sin(rays[i][1]))
                for i, r in ((j, r0), (j, r1), (k, r1), (k, r0))
            ]
            draw.polygon(chunk, fill=mix(glass, WHITE, rng.uniform(0.25, 0.45)))


def _draw_rings(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    center: Point,
    rays: list[np.ndarray],
    lengths: np.ndarray,
    radius: float,
    heavy: float,
    width: int,
) -> None:
    """Broken rings joining neighbouring cracks, where both reach that far."""
    cx, cy = center
    n = len(rays)
    for ring in rng.choice(
        [0.3, 0.55, 0.8], 1 + min(2, round(2 * heavy + rng.uniform(0, 0.6))), replace=False
    ):
        r = ring * radius
        for j in range(n):
            k = (j + 1) % n
            if min(lengths[j], lengths[k]) >= r and rng.random() < 0.75:
                ends = [
                    (cx + r * math.cos(rays[i][2]), cy + r * math.sin(rays[i][2])) for i in (j, k)
                ]
                draw.line(ends, fill=grey(rng.uniform(210, 250)), width=width)


def _paint_paint(cv: Canvas, plan: Plan, rng: np.random.Generator) -> Box:
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
        blob = arc(*center, radius * wobble, radius * wobble * squash, t)
        fill = colours[rng.integers(len(colours))]
        draw.polygon(
            blob, fill=fill, outline=mix(cv.palette["body"], BLACK, 0.5), width=cv.line_width
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
    cv.put(box, patch, same_group(cv, plan.part))
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
    candidates = [(238, 238, 234), *PRIMERS]
    far = [c for c in candidates if abs(luma(c) - luma(body)) > 55]
    return far or [max(candidates, key=lambda c: abs(luma(c) - luma(body)))]


def _paint_wheel(cv: Canvas, plan: Plan, rng: np.random.Generator) -> Box:
    """A flat tyre (squashed, its sidewall folded), a blown one (the bare rim on the road in
    shreds of rubber, strips of it beside) and/or a bent rim missing spokes, scraped bright."""
    lo, hi = KINDS["wheel"].size_range
    f = float(np.clip((plan.size - lo) / (hi - lo), 0, 1))
    wheel = cv.car.wheel(cv.car.parts[plan.part].name)
    rim, blown = "rim" in plan.style, "blown" in plan.style
    reach = max(wheel.rx, wheel.ry)
    box = cv.box(wheel.center, 2.4 * reach if blown else 1.6 * reach)
    patch = cv.image.crop(box)
    local = replace(wheel, center=(wheel.center[0] - box[0], wheel.center[1] - box[1]))
    style = cv.wheel_style
    if blown:  # the tyre torn away: a wider, brighter rim
        style = replace(style, rim_frac=0.7 + 0.15 * f, rim=mix(style.rim, WHITE, 0.3))
    draw = ImageDraw.Draw(patch)
    drawn = draw_wheel(
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
        fold = mix(style.tyre, WHITE, 0.5)
        for k in range(2):
            r = (0.8 + 0.12 * k) * local.rx
            t = np.linspace(0.25 * np.pi, 0.75 * np.pi, 8)
            draw.line(arc(cx, cy + 0.15 * local.ry, 1.25 * r, 0.7 * r, t), fill=fold, width=width)
    if rim or blown:  # bare metal where the rim scraped the road
        t = rng.uniform(0, 2 * np.pi) + np.linspace(0, rng.uniform(1.5, 3.0) + 3 * blown, 16)
        r = style.rim_frac
        draw.line(arc(cx, cy, r * local.rx, r * local.ry, t), fill=grey(240), width=2 * width)
    if blown:
        _draw_shreds(draw, rng, local, style, f, width)
        drawn = (0, 0, patch.width, patch.height)
    cv.put(box, patch, np.arange(plan.part + 2))  # the wheel and what lies under it
    return (drawn[0] + box[0], drawn[1] + box[1], drawn[2] + box[0], drawn[3] + box[1])


def _draw_shreds(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    wheel: Wheel,
    style: WheelStyle,
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


PAINTERS: dict[str, Callable[[Canvas, Plan, np.random.Generator], Box]] = {
    "dent": _paint_dent,
    "glass": _paint_glass,
    "paint": _paint_paint,
    "wheel": _paint_wheel,
}
