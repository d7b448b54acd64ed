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

Modules, by concern: :mod:`.labels` (label names from the task definitions, frequencies, the
severity rule), :mod:`.geometry` and :mod:`.layouts` (the car's views as polygon data),
:mod:`.colours`, :mod:`.scene` (background and undamaged car), :mod:`.kinds` (each damage kind as
data), :mod:`.painters` (one per kind), :mod:`.damage` (planning and fitting to a severity),
:mod:`.camera` (blur, light, noise, JPEG), :mod:`.sample` and :mod:`.writer` (files, manifest,
worker processes), :mod:`.claims` (one car seen from several views: a claim).
"""

from cardamage.data.manifest import LABEL_SEPARATOR
from cardamage.synthetic.labels import (
    DAMAGE_TYPES,
    LOCATIONS,
    MANIFEST_HEADER,
    SEVERITIES,
    SEVERITY_THRESHOLDS,
    Damage,
    SynthFrequencies,
    SynthSample,
    damage_extent,
    severity_for_extent,
)
from cardamage.synthetic.layouts import VIEWS
from cardamage.synthetic.sample import draw_sample
from cardamage.synthetic.writer import generate_claims, generate_dataset

__all__ = [
    "DAMAGE_TYPES",
    "LABEL_SEPARATOR",
    "LOCATIONS",
    "MANIFEST_HEADER",
    "SEVERITIES",
    "SEVERITY_THRESHOLDS",
    "VIEWS",
    "Damage",
    "SynthFrequencies",
    "SynthSample",
    "damage_extent",
    "draw_sample",
    "generate_claims",
    "generate_dataset",
    "severity_for_extent",
]
