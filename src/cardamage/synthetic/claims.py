"""Claims: one car seen from 2 to 6 views, its damage placed on the car, each photo showing
only the damages on the faces it sees.

The car (body shape, colours, wheels, background family) is drawn once. Its damages are drawn
at the car level first: a severity, as many damages as that severity usually has, each a kind
on one face of the car (front, rear, left or right side; a wheel only on a side). Each photo
is then a view of that car (a side view sees one side, a three-quarter view an end and a side)
with the damages on the faces it sees painted on the parts at their location, sized so that a
photo showing k of the car's n damages shows about k/n of the car's extent. A photo's labels
follow what it shows, as for a single photo (its severity from its measured extent); the
claim's labels follow the car: the union of the damages drawn, and the car's severity, never
lower than any photo's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardamage.synthetic.camera import finish
from cardamage.synthetic.damage import HEAVY, Want, damage_count, fit_damages
from cardamage.synthetic.labels import (
    BANDS,
    DAMAGE_TYPES,
    LOCATIONS,
    SEVERITIES,
    UNDAMAGED,
    SynthFrequencies,
    SynthSample,
    choice,
    damage_extent,
    severity_for_extent,
)
from cardamage.synthetic.scene import SUPERSAMPLE, CarLook, draw_scene

#: The car's faces and the location label of the parts on each.
FACES = {"front": "front", "rear": "rear", "left": "side", "right": "side"}
#: The views a claim may hold, as (view, mirrored): a mirrored view shows the right side.
CAMERAS = (
    ("side", False),
    ("side", True),
    ("front", False),
    ("rear", False),
    ("three_quarter_front", False),
    ("three_quarter_front", True),
    ("three_quarter_rear", False),
    ("three_quarter_rear", True),
)
MIN_VIEWS, MAX_VIEWS = 2, 6


def faces_seen(view: str, mirrored: bool) -> frozenset[str]:
    """The faces of the car a view shows damage on."""
    side = "right" if mirrored else "left"
    return frozenset(
        {
            "side": {side},
            "front": {"front"},
            "rear": {"rear"},
            "three_quarter_front": {"front", side},
            "three_quarter_rear": {"rear", side},
        }[view]
    )


@dataclass(frozen=True)
class CarDamage:
    """One damage of the car: its kind and the face it is on."""

    kind: str
    face: str


@dataclass(frozen=True)
class ClaimSample:
    """The photos of one car and the car's labels."""

    photos: tuple[SynthSample, ...]
    severity: str
    location: tuple[str, ...]
    damage_type: tuple[str, ...]
    damages: tuple[CarDamage, ...]  # those drawn in at least one photo


def draw_claim(
    rng: np.random.Generator, size: int = 224, frequencies: SynthFrequencies | None = None
) -> ClaimSample:
    """One claim; the same generator state gives the same claim."""
    freq = frequencies or SynthFrequencies()
    look_rng, plan_rng, *photo_rngs = rng.spawn(2 + MAX_VIEWS)
    look = CarLook.draw(look_rng)
    severity, damages = _car_damage(plan_rng, freq)
    cameras = _cameras(plan_rng, damages)
    goal = math.exp(plan_rng.uniform(*np.log(BANDS[severity]))) if damages else 0.0
    photos = [
        _photo(photo_rng, size, look, camera, damages, goal, severity)
        for photo_rng, camera in zip(photo_rngs, cameras, strict=False)
    ]
    drawn = {(d.kind, d.location) for p in photos for d in p.damages}
    kept = tuple(d for d in damages if (d.kind, FACES[d.face]) in drawn)
    return ClaimSample(
        tuple(photos),
        _claim_severity(severity, goal, len(kept), len(damages), photos),
        tuple(loc for loc in LOCATIONS if any(loc in p.location for p in photos)),
        tuple(k for k in DAMAGE_TYPES if any(k in p.damage_type for p in photos)),
        kept,
    )


def _car_damage(rng: np.random.Generator, freq: SynthFrequencies) -> tuple[str, list[CarDamage]]:
    """The car's severity and damages, each on a face that can carry its kind."""
    if rng.random() < freq.p_undamaged:
        return UNDAMAGED, []
    severity = choice(rng, freq.severity, SEVERITIES)
    damages = []
    for _ in range(damage_count(rng, severity, freq.max_damages)):
        kind = choice(rng, freq.damage_types, DAMAGE_TYPES)
        faces = ("left", "right") if kind == "wheel" else tuple(FACES)
        damages.append(CarDamage(kind, faces[int(rng.integers(len(faces)))]))
    return severity, damages


def _cameras(rng: np.random.Generator, damages: list[CarDamage]) -> list[tuple[str, bool]]:
    """2 to 6 distinct views, enough of them to see every damaged face, in random order."""
    n = int(rng.integers(MIN_VIEWS, MAX_VIEWS + 1))
    chosen: list[tuple[str, bool]] = []
    for face in dict.fromkeys(d.face for d in damages):
        if not any(face in faces_seen(*c) for c in chosen):
            seeing = [c for c in CAMERAS if face in faces_seen(*c) and c not in chosen]
            chosen.append(seeing[int(rng.integers(len(seeing)))])
    rest = [c for c in CAMERAS if c not in chosen]
    extra = max(0, n - len(chosen))
    chosen += [rest[i] for i in rng.permutation(len(rest))[:extra]]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _photo(
    rng: np.random.Generator,
    size: int,
    look: CarLook,
    camera: tuple[str, bool],
    damages: list[CarDamage],
    goal: float,
    severity: str,
) -> SynthSample:
    """One view of the car with the damages on the faces it sees, k of n damages sized to show
    about k/n of the car's extent; its labels from what it shows."""
    scene_rng, damage_rng, finish_rng = rng.spawn(3)
    view, mirrored = camera
    cv = draw_scene(scene_rng, size * SUPERSAMPLE, {view: 1.0}, look, mirrored)
    seen = faces_seen(view, mirrored)
    wants: list[Want] = [(d.kind, FACES[d.face]) for d in damages if d.face in seen]
    drawn = []
    if wants:
        share = len(wants) / len(damages)
        band = (goal * share / 1.1, goal * share * 1.1)
        drawn = fit_damages(damage_rng, cv, lambda n: wants[:n], len(wants), band, HEAVY[severity])
    return SynthSample(
        image=finish(cv.image, size, finish_rng),
        severity=severity_for_extent(damage_extent(drawn)),
        location=tuple(loc for loc in LOCATIONS if any(d.location == loc for d in drawn)),
        damage_type=tuple(k for k in DAMAGE_TYPES if any(d.kind == k for d in drawn)),
        damages=tuple(drawn),
        view=view,
    )


def _claim_severity(
    planned: str, goal: float, kept: int, planned_n: int, photos: list[SynthSample]
) -> str:
    """The car's severity: its planned extent, less the damages no photo could show, and never
    lower than what a photo shows."""
    if not kept:
        return UNDAMAGED
    car = planned if kept == planned_n else severity_for_extent(goal * kept / planned_n)
    order = [UNDAMAGED, *(s for s in SEVERITIES if s != UNDAMAGED)]
    return max([car, *(p.severity for p in photos)], key=order.index)
