"""Generated claims: one car in several views, each photo labelled with what it shows, the claim
with what the car has."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cardamage.data.folds import fold_units
from cardamage.data.manifest import load_manifest
from cardamage.synthetic import generate_claims
from cardamage.synthetic.claims import (
    FACES,
    MAX_VIEWS,
    MIN_VIEWS,
    ClaimSample,
    draw_claim,
    faces_seen,
)
from cardamage.synthetic.labels import UNDAMAGED
from cardamage.tasks import default_tasks

SIZE = 96
ORDER = ["whole", "minor", "moderate", "severe"]


@pytest.fixture(scope="module")
def claims() -> list[ClaimSample]:
    return [draw_claim(np.random.default_rng([3, i]), SIZE) for i in range(25)]


def test_photo_labels_are_consistent_with_the_claim(claims):
    for claim in claims:
        assert MIN_VIEWS <= len(claim.photos) <= MAX_VIEWS
        for task in ("location", "damage_type"):
            union = {x for p in claim.photos for x in getattr(p, task)}
            assert union <= set(getattr(claim, task))
        for photo in claim.photos:
            assert ORDER.index(photo.severity) <= ORDER.index(claim.severity)
            assert (photo.severity == UNDAMAGED) == (photo.damages == ())
        if claim.severity == UNDAMAGED:
            assert all(p.severity == UNDAMAGED for p in claim.photos)  # a whole car: all whole
            assert claim.location == claim.damage_type == ()
        else:
            assert any(p.severity != UNDAMAGED for p in claim.photos)  # some photo shows it


def test_a_claim_mixes_photos_that_see_damage_and_photos_that_do_not(claims):
    damaged = [c for c in claims if c.severity != UNDAMAGED]
    assert damaged and any(UNDAMAGED in {p.severity for p in c.photos} for c in damaged)
    assert any(len({p.view for p in c.photos}) > 1 for c in claims)


def test_each_view_shows_only_the_damages_on_its_faces():
    for i in range(10):
        claim = draw_claim(np.random.default_rng([5, i]), SIZE)
        faces = {d.face for d in claim.damages}
        for photo in claim.photos:
            seen = set().union(*(faces_seen(photo.view, m) for m in (False, True)))
            for damage in photo.damages:  # a damage sits at the location of a face the car has
                assert damage.location in {FACES[f] for f in faces & seen}


def test_files_manifest_and_car_labels(tmp_path: Path):
    manifest_path, cars_path = generate_claims(tmp_path / "a", n=6, size=SIZE, seed=1)
    manifest, _ = load_manifest(manifest_path, manifest_path.parent, default_tasks())
    assert manifest.claims is not None and len(set(manifest.claims)) == 6
    units = fold_units(manifest)
    assert len(set(units)) == 6  # a claim's photos are one fold unit
    with open(cars_path, newline="") as f:
        cars = list(csv.DictReader(f))
    assert [c["claim"] for c in cars] == sorted(set(manifest.claims))
    again, _ = generate_claims(tmp_path / "b", n=6, size=SIZE, seed=1)
    assert again.read_bytes() == manifest_path.read_bytes()
    first = sorted((tmp_path / "a" / "images").iterdir())
    assert [p.read_bytes() for p in first] == [
        (tmp_path / "b" / "images" / p.name).read_bytes() for p in first
    ]
