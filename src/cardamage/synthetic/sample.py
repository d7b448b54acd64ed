"""One synthetic sample: scene, damage and camera, each from its own random stream."""

from __future__ import annotations

import numpy as np

from cardamage.synthetic.camera import finish
from cardamage.synthetic.damage import damage_car
from cardamage.synthetic.labels import (
    DAMAGE_TYPES,
    LOCATIONS,
    SynthFrequencies,
    SynthSample,
    damage_extent,
    severity_for_extent,
)
from cardamage.synthetic.scene import SUPERSAMPLE, draw_scene


def draw_sample(
    rng: np.random.Generator, size: int = 224, frequencies: SynthFrequencies | None = None
) -> SynthSample:
    """One photo and its labels. The same generator state gives the same sample."""
    freq = frequencies or SynthFrequencies()
    scene_rng, damage_rng, finish_rng = rng.spawn(3)
    cv = draw_scene(scene_rng, size * SUPERSAMPLE, freq.views)
    damages = damage_car(damage_rng, cv, freq)
    return SynthSample(
        image=finish(cv.image, size, finish_rng),
        severity=severity_for_extent(damage_extent(damages)),
        location=tuple(loc for loc in LOCATIONS if any(d.location == loc for d in damages)),
        damage_type=tuple(k for k in DAMAGE_TYPES if any(d.kind == k for d in damages)),
        damages=tuple(damages),
        view=cv.car.view,
    )
