"""The undamaged photo: background, shadow and car, drawn at render scale with a part-id map.

The id map tells, per pixel, which car part is on top: damage is painted only there, and the
extent is measured against the car's pixels in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cardamage.synthetic.colours import (
    BLACK,
    RGB,
    WHITE,
    WheelStyle,
    grey,
    hsv,
    mix,
    random_palette,
    wheel_style,
)
from cardamage.synthetic.geometry import Box, CarLayout, Part, Point, Wheel, arc, clip, rect
from cardamage.synthetic.labels import choice
from cardamage.synthetic.layouts import VIEWS, Shape, place, random_shape, unit_layout

SUPERSAMPLE = 2  # drawn at twice the size and reduced: cheap anti-aliasing


@dataclass
class Canvas:
    """The photo being drawn (at render scale) and, per pixel, which car part is on top."""

    image: Image.Image
    ids: np.ndarray  # 0 = not the car, i + 1 = car.parts[i]
    car: CarLayout
    palette: dict[str, RGB]
    wheel_style: WheelStyle
    light: Point  # direction towards the light, in the image plane

    @property
    def line_width(self) -> int:
        """Thin lines: one output pixel wide."""
        return SUPERSAMPLE

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


BACKGROUNDS = ("outdoor", "wall", "studio")


@dataclass(frozen=True)
class CarLook:
    """What one car keeps in every photo of a claim: body shape, colours, wheels, and the kind
    of place it stands in (the background's family; its details change with the camera)."""

    shape: Shape
    palette: dict[str, RGB]
    wheel_style: WheelStyle
    background: str  # outdoor | wall | studio

    @classmethod
    def draw(cls, rng: np.random.Generator) -> CarLook:
        shape, palette = random_shape(rng), random_palette(rng)
        return cls(shape, palette, wheel_style(rng, palette), str(rng.choice(BACKGROUNDS)))


def draw_scene(
    rng: np.random.Generator,
    canvas: int,
    views: Mapping[str, float],
    look: CarLook | None = None,
    mirrored: bool | None = None,
) -> Canvas:
    """Background, shadow and an undamaged car; every random choice from the scene stream.

    ``look`` and ``mirrored`` (which side of the car a side or three-quarter view shows) fix
    the car of a claim; the stream is drawn alike either way, so a photo alone is unchanged.
    """
    view = choice(rng, views, VIEWS)
    shape = random_shape(rng)
    unit = unit_layout(view, shape if look is None else look.shape)
    flip = rng.random() < 0.5
    if flip if mirrored is None else mirrored:
        unit = unit.mirrored()
    car = place(unit, rng, canvas)
    palette = random_palette(rng) if look is None else look.palette
    image = _background(rng, canvas, car, None if look is None else look.background)
    light = _unit_vector(rng.uniform(-0.8, 0.8), -1.0)
    style = wheel_style(rng, palette) if look is None else look.wheel_style
    cv = Canvas(image, _id_map(car, canvas), car, palette, style, light)
    _draw_car(cv, rng)
    return cv


def _unit_vector(x: float, y: float) -> Point:
    n = math.hypot(x, y)
    return (x / n, y / n)


def _car_bounds(car: CarLayout) -> tuple[float, float, float, float]:
    xs = [x for p in car.parts for x, _ in p.poly]
    ys = [y for p in car.parts for _, y in p.poly]
    return min(xs), min(ys), max(xs), max(ys)


def _background(
    rng: np.random.Generator, size: int, car: CarLayout, family: str | None = None
) -> Image.Image:
    """Sky and ground, a wall, or a studio backdrop (``family`` when given), then clutter and
    the car's soft shadow."""
    x0, _, x1, ground = _car_bounds(car)
    kind = rng.choice(list(BACKGROUNDS))
    kind = kind if family is None else family
    if kind == "outdoor":
        horizon = rng.uniform(0.15, 0.9) * max(0.2 * size, ground - 0.05 * size)
        sky = hsv(rng.uniform(0.52, 0.64), rng.uniform(0.05, 0.5), rng.uniform(0.65, 1.0))
        ground_c = hsv(rng.uniform(0.05, 0.35), rng.uniform(0.0, 0.45), rng.uniform(0.25, 0.6))
        column = _two_tone(
            size, horizon, (sky, mix(sky, WHITE, 0.4)), (ground_c, mix(ground_c, BLACK, 0.3))
        )
    elif kind == "wall":
        floor = ground - rng.uniform(0.0, 0.2) * size
        wall = hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.35, 0.95))
        floor_c = grey(rng.uniform(60, 170))
        column = _two_tone(
            size, floor, (wall, mix(wall, BLACK, 0.15)), (floor_c, mix(floor_c, BLACK, 0.25))
        )
    else:
        top, bottom = grey(rng.uniform(120, 240)), grey(rng.uniform(60, 200))
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
        colour = grey(rng.uniform(40, 200))
        for y in np.arange(rng.uniform(0, step), size, step):
            draw.line([(0, y), (size, y)], fill=colour, width=max(1, int(size / 200)))
    for _ in range(int(rng.integers(0, 3))):
        colour = hsv(rng.random(), rng.uniform(0, 0.7), rng.uniform(0.2, 0.95))
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
    black = Image.new("RGB", image.size, BLACK)
    return Image.composite(black, image, mask.resize(image.size, Image.BILINEAR))


def _id_map(car: CarLayout, size: int) -> np.ndarray:
    ids = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ids)
    for i, part in enumerate(car.parts):
        draw.polygon(part.poly, fill=i + 1)
    return np.asarray(ids)


def _draw_car(cv: Canvas, rng: np.random.Generator) -> None:
    draw = ImageDraw.Draw(cv.image)
    slant = rng.uniform(0.3, 0.9) * rng.choice([-1, 1])  # one sun: all streaks lean alike
    for part in cv.car.parts:
        if part.role == "wheel":
            draw_wheel(draw, cv.car.wheel(part.name), cv.wheel_style)
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
        streak = clip(((u, y0), (u + width, y0), (u + width + dx, y1), (u + dx, y1)), part.poly)
        if streak:
            draw.polygon(streak, fill=mix(glass, WHITE, rng.uniform(0.12, 0.4)))
    if part.name.endswith("rear_window") and rng.random() < 0.5:
        colour = mix(glass, (170, 140, 110), 0.5)
        for y in np.linspace(y0 + 0.25 * h, y1 - 0.15 * h, int(rng.integers(3, 7))):
            line = clip(rect(x0, y, x1, y + 1), part.poly)
            if line:
                draw.polygon(line, fill=colour)


def draw_wheel(
    draw: ImageDraw.ImageDraw,
    wheel: Wheel,
    style: WheelStyle,
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

    draw.polygon(arc(cx, cy, rx * profile(t), ry * profile(t), t), fill=style.rim)
    _draw_spokes(draw, (cx, cy, rx, ry), style, missing, bend_at, profile)
    draw.ellipse([cx - 0.22 * rx, cy - 0.22 * ry, cx + 0.22 * rx, cy + 0.22 * ry], fill=style.hole)
    return (int(tx.min()) - 1, int(ty.min()) - 1, math.ceil(tx.max()) + 2, math.ceil(ty.max()) + 2)


def _draw_spokes(
    draw: ImageDraw.ImageDraw,
    rim: tuple[float, float, float, float],
    style: WheelStyle,
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
            arc(cx, cy, 0.75 * rx * profile(t), 0.75 * ry * profile(t), t) * 2,
            fill=mix(style.rim, BLACK, 0.35),
            width=SUPERSAMPLE,
        )
        if missing:
            t = bend_at + np.linspace(-1, 1, 9) * (0.35 + 0.3 * missing)
            band = 0.75 * profile(t)
            draw.polygon([(cx, cy), *arc(cx, cy, rx * band, ry * band, t)], fill=style.hole)
        return
    n = style.spokes
    angles = style.phase + 2 * np.pi * np.arange(n) / n
    gone = set(np.argsort(np.abs(np.angle(np.exp(1j * (angles - bend_at)))))[:missing].tolist())
    kept = [a for i, a in enumerate(angles) if i not in gone]
    half = 0.18 * 2 * np.pi / n  # half a spoke's angular width
    for a, b in zip(kept, [*kept[1:], kept[0] + 2 * np.pi], strict=True):
        t = np.linspace(a + half, b - half, 6 + 2 * len(gone))
        band = np.maximum(profile(t) - 0.2, 0.36)
        outer = arc(cx, cy, band * rx, band * ry, t)
        inner = arc(cx, cy, 0.32 * rx, 0.32 * ry, t[::-1])
        draw.polygon(outer + inner, fill=style.hole)
