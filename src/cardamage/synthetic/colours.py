"""Colours: the car's palette and wheel style, and the mixing helpers the painters share."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]


WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
#: Primer greys and bare metal: what paint loss shows.
PRIMERS: tuple[RGB, ...] = ((168, 168, 162), (98, 100, 104), (202, 205, 209))


def mix(c: RGB, target: RGB, t: float) -> RGB:
    return tuple(int(a + (b - a) * t + 0.5) for a, b in zip(c, target, strict=True))  # type: ignore[return-value]


def hsv(h: float, s: float, v: float) -> RGB:
    return tuple(int(255 * c + 0.5) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))  # type: ignore[return-value]


def grey(v: float) -> RGB:
    g = int(v + 0.5)
    return (g, g, g)


def luma(c: RGB) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _body_colour(rng: np.random.Generator) -> RGB:
    """Common car colours: many whites, silvers, greys and blacks, the rest any hue."""
    if rng.random() < 0.4:
        return grey(
            rng.choice(
                [
                    rng.uniform(215, 245),
                    rng.uniform(165, 200),
                    rng.uniform(90, 130),
                    rng.uniform(18, 45),
                ]
            )
        )
    return hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.9))


def random_palette(rng: np.random.Generator) -> dict[str, RGB]:
    body = _body_colour(rng)
    trims = (grey(rng.uniform(20, 45)), grey(rng.uniform(55, 80)), body)
    return {
        "body": body,
        "body_hi": mix(body, WHITE, rng.uniform(0.12, 0.25)),
        "body_lo": mix(body, BLACK, rng.uniform(0.2, 0.35)),
        "seam": mix(body, BLACK, 0.45),
        "glass": hsv(rng.uniform(0.5, 0.66), rng.uniform(0.05, 0.4), rng.uniform(0.12, 0.5)),
        "trim": trims[rng.integers(len(trims))],
        "dark": grey(rng.uniform(15, 40)),
        "tyre": grey(rng.uniform(22, 42)),
        "head": hsv(rng.uniform(0.1, 0.6), rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)),
        "tail": hsv(rng.uniform(-0.02, 0.02), rng.uniform(0.75, 0.95), rng.uniform(0.6, 0.9)),
        "plate": (235, 235, 230) if rng.random() < 0.7 else (235, 200, 40),
    }


@dataclass(frozen=True)
class WheelStyle:
    tyre: RGB
    rim: RGB
    hole: RGB  # openings between the spokes
    rim_frac: float  # rim radius over tyre radius
    spokes: int  # 0 = a plain hubcap
    phase: float


def wheel_style(rng: np.random.Generator, palette: dict[str, RGB]) -> WheelStyle:
    rims = [grey(rng.uniform(lo, hi)) for lo, hi in ((170, 215), (120, 150), (215, 235))]
    return WheelStyle(
        tyre=palette["tyre"],
        rim=rims[rng.integers(len(rims))],
        hole=grey(rng.uniform(15, 50)),
        rim_frac=rng.uniform(0.56, 0.7),
        spokes=int(rng.choice([0, 5, 5, 6, 7, 10])),
        phase=rng.uniform(0, 2 * np.pi),
    )
