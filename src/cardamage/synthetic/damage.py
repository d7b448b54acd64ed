"""Damage on the drawn car: what to draw for a severity, where, and how large.

The severity is chosen first and the damages are fitted to it (resized until the share of the car
they visibly changed lands in its band), so the label always follows what the photo shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from cardamage.synthetic.geometry import Box, Part, Point
from cardamage.synthetic.kinds import KINDS
from cardamage.synthetic.labels import (
    BANDS,
    DAMAGE_TYPES,
    SEVERITIES,
    Damage,
    SynthFrequencies,
    choice,
    damage_extent,
)
from cardamage.synthetic.painters import PAINTERS, Plan, same_group
from cardamage.synthetic.scene import SUPERSAMPLE, Canvas

#: How violent the damage of each severity looks: a crash that smashed much of the car also
#: crumpled its metal and shattered its glass; a small knock left a soft dent or a chip.
HEAVY = {"minor": (0.0, 0.2), "moderate": (0.4, 0.6), "severe": (0.8, 1.0)}
VISIBLE = 24  # a pixel counts as damaged where a channel changed by more than this
_FIT_STEPS = 5
#: Chances of 1, 2 or 3 damages given the severity: worse cars have more of them.
_COUNT_WEIGHTS = {"minor": (1.0, 0.0, 0.0), "moderate": (0.1, 0.9, 0.0), "severe": (0.0, 0.1, 0.9)}
_PLAN_TRIES = 12
_KIND_TRIES = 4  # tries of the same kinds (other sites, sizes) before drawing other kinds


def damage_car(rng: np.random.Generator, cv: Canvas, freq: SynthFrequencies) -> list[Damage]:
    """Pick a severity, then draw damages whose measured extent falls in its band."""
    if rng.random() < freq.p_undamaged:
        return []
    target = choice(rng, freq.severity, SEVERITIES)
    kinds = _drawable_kinds(cv, freq)
    if not any(w > 0 for w in kinds.values()):
        return []
    count = damage_count(rng, target, freq.max_damages)

    def pick(n: int) -> list[Want]:
        return [(choice(rng, kinds, DAMAGE_TYPES), None) for _ in range(n)]

    return fit_damages(rng, cv, pick, count, BANDS[target], HEAVY[target])


#: A damage to draw: its kind, and the location it must sit on (None: anywhere it can).
Want = tuple[str, str | None]


def fit_damages(
    rng: np.random.Generator,
    cv: Canvas,
    pick: Callable[[int], list[Want]],
    count: int,
    band: tuple[float, float],
    heavy: tuple[float, float],
) -> list[Damage]:
    """Draw ``count`` damages (``pick(n)`` says which), whose summed extent lands in ``band``.

    The sizes are a first guess; the damages are redrawn larger or smaller until the share of
    the car they visibly changed lands in the band (a dent on a black car must be larger to
    show as much as one on a white car). Where no plan gets there, the nearest one stays: the
    label always follows the extent measured on what was drawn.
    """
    clean = cv.image.copy()
    best: tuple[float, list[Plan]] | None = None
    for n in range(count, 0, -1):  # fewer damages if that many do not fit on the car
        for attempt in range(_PLAN_TRIES):
            if attempt % _KIND_TRIES == 0:  # new kinds only when these keep failing: no kind is
                picked = pick(n)  # favoured
            goal = math.exp(rng.uniform(*np.log(band)))
            plans = _try_plan(rng, cv, picked, goal, heavy)
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


def _drawable_kinds(cv: Canvas, freq: SynthFrequencies) -> dict[str, float]:
    """The damage-type weights of the kinds whose surface the photo shows (no wheel in a
    close-up of a door, say)."""
    return {
        k: w
        for k, w in freq.damage_types.items()
        if len(cv.shown(lambda p, k=k: p.surface == KINDS[k].surface))
    }


def damage_count(rng: np.random.Generator, severity: str, most: int) -> int:
    """How many damages a car of ``severity`` gets: worse cars have more of them, up to
    ``most`` (all of them when the cap leaves none of the usual counts)."""
    weights = np.array(_COUNT_WEIGHTS[severity][:most])
    if weights.sum() <= 0:
        return most
    return 1 + int(rng.choice(len(weights), p=weights / weights.sum()))


def _draw_all(cv: Canvas, plans: list[Plan]) -> list[Damage]:
    return [_draw_damage(cv, plan) for plan in plans]


def _draw_fitted(
    cv: Canvas, clean: Image.Image, plans: list[Plan], goal: float, band: tuple[float, float]
) -> tuple[list[Damage], list[Plan]]:
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


def _draw_damage(cv: Canvas, plan: Plan) -> Damage:
    """Paint one damage and measure it: the share of the car's pixels it visibly changed."""
    before = np.asarray(cv.image)
    box = PAINTERS[plan.kind](cv, plan, np.random.default_rng(plan.seed))
    w = cv.image.width
    x0, y0, x1, y1 = box = (max(0, box[0]), max(0, box[1]), min(w, box[2]), min(w, box[3]))
    after = np.asarray(cv.image.crop(box))
    diff = np.abs(after.astype(np.int16) - before[y0:y1, x0:x1])
    changed = (diff[..., 0] > VISIBLE) | (diff[..., 1] > VISIBLE) | (diff[..., 2] > VISIBLE)
    # a thin line counts with its edges (what the eye, and a network, sees of it)
    grown = changed.copy()
    grown[1:] |= changed[:-1]
    grown[:-1] |= changed[1:]
    changed = grown.copy()
    changed[:, 1:] |= grown[:, :-1]
    changed[:, :-1] |= grown[:, 1:]
    area = np.count_nonzero(changed) / cv.car_pixels
    part = cv.car.parts[plan.part]
    s = SUPERSAMPLE
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
    cv: Canvas,
    wants: list[Want],
    goal: float,
    heavy: tuple[float, float],
) -> list[Plan]:
    """Sites for the damages, first-guess sizes for a summed extent near ``goal``, and looks
    as violent as ``heavy`` says."""
    sites: list[tuple[int, Point]] = []
    for kind, where in wants:
        site = _site(rng, cv, kind, where, sites)
        if site is None:
            return []
        sites.append(site)
    kinds = [kind for kind, _ in wants]
    plans = []
    for kind, (part, center) in zip(kinds, sites, strict=True):
        guess = math.sqrt(goal / len(kinds) / KINDS[kind].area_per_size2) * rng.uniform(0.8, 1.25)
        style = choice(rng, KINDS[kind].styles, list(KINDS[kind].styles))
        limit = _size_limit(cv, kind, part)
        heaviness = float(rng.uniform(*heavy))
        plan = Plan(kind, style, part, center, guess, limit, heaviness, int(rng.integers(2**32)))
        plans.append(plan.scaled(1.0))
    return plans


def _size_limit(cv: Canvas, kind: str, part: int) -> float:
    """The largest size a damage may be fitted to; a crack spans at most its window."""
    hi = KINDS[kind].size_range[1]
    if kind == "glass":
        xs, ys = zip(*cv.car.parts[part].poly, strict=True)
        hi = min(hi, 1.2 * max(max(xs) - min(xs), max(ys) - min(ys)) / cv.car.width)
    return max(hi, KINDS[kind].size_range[0])


def _site(
    rng: np.random.Generator,
    cv: Canvas,
    kind: str,
    where: str | None,
    taken: list[tuple[int, Point]],
) -> tuple[int, Point] | None:
    """A part (at location ``where`` when given) and a point on it, inside the part and apart
    from the damages already placed."""
    surface = KINDS[kind].surface

    def fits(p: Part) -> bool:
        return p.surface == surface and (where is None or p.location == where)

    if surface == "wheel":
        size = cv.image.width
        free = [
            i - 1
            for i in cv.shown(fits)
            if i - 1 not in {t for t, _ in taken}
            and all(0 <= c < size for c in cv.car.wheel(cv.car.parts[i - 1].name).center)
        ]
        if not free:
            return None
        part = free[int(rng.integers(len(free)))]
        return part, cv.car.wheel(cv.car.parts[part].name).center
    candidates = np.flatnonzero(cv.lut(cv.part_ids(fits))[cv.ids])
    if not len(candidates):
        return None
    size, reach = cv.ids.shape[1], 0.025 * cv.car.width
    for index in rng.choice(candidates, 16):
        y, x = divmod(int(index), size)
        part = int(cv.ids[y, x]) - 1
        same = cv.lut(same_group(cv, part))
        probes = np.array([(x + reach, y), (x - reach, y), (x, y + reach), (x, y - reach)])
        px, py = np.clip(probes, 0, size - 1).astype(int).T
        inside = bool(same[cv.ids[py, px]].all())
        apart = all(math.dist((x, y), c) > 0.1 * cv.car.width for _, c in taken)
        if inside and apart:
            return part, (float(x), float(y))
    return None


def _output_box(box: Box, size: int) -> Box:
    x0, y0, x1, y1 = box
    s = SUPERSAMPLE
    return (max(0, x0 // s), max(0, y0 // s), min(size, -(-x1 // s)), min(size, -(-y1 // s)))
