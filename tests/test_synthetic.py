"""The synthetic data set: labels agree with what was drawn, output is reproducible and readable."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.errors import CardamageError
from cardamage.synthetic import (
    DAMAGE_TYPES,
    LOCATIONS,
    SEVERITIES,
    SynthFrequencies,
    SynthSample,
    draw_sample,
    generate_dataset,
    severity_for_extent,
)
from cardamage.synthetic.damage import VISIBLE, damage_car
from cardamage.synthetic.kinds import KINDS
from cardamage.synthetic.labels import BANDS, UNDAMAGED
from cardamage.synthetic.layouts import VIEWS, random_shape, unit_layout
from cardamage.synthetic.painters import PAINTERS, same_group
from cardamage.synthetic.scene import SUPERSAMPLE, draw_scene
from cardamage.tasks import default_tasks

SIZE = 96
GLASS_PARTS = {"windscreen", "rear_window", "window_front", "window_rear"}
WHEEL_PARTS = {"wheel_front", "wheel_rear"}


def samples(
    n: int, frequencies: SynthFrequencies | None = None, size: int = SIZE, start: int = 0
) -> list[SynthSample]:
    return [
        draw_sample(np.random.default_rng([7, i]), size, frequencies)
        for i in range(start, start + n)
    ]


@pytest.fixture(scope="module")
def many() -> list[SynthSample]:
    return samples(400)


def test_every_packaged_label_can_be_drawn() -> None:
    """The label names come from the task definitions; each of them must be one the generator
    knows how to draw: a band per damaged severity, a kind and a painter per damage type, car
    parts at every location."""
    labels = {t.name: t.labels for t in default_tasks()}
    assert labels == {"severity": SEVERITIES, "location": LOCATIONS, "damage_type": DAMAGE_TYPES}
    assert (*BANDS, UNDAMAGED) == SEVERITIES
    assert tuple(KINDS) == tuple(PAINTERS) == DAMAGE_TYPES
    shape = random_shape(np.random.default_rng(0))
    drawn = {p.location for view in VIEWS for p in unit_layout(view, shape).parts}
    assert drawn == set(LOCATIONS)


@pytest.mark.parametrize("kind", DAMAGE_TYPES)
def test_each_painter_changes_only_its_parts_pixels(kind: str) -> None:
    """At render scale, before the camera: a damage changes only pixels of the part it names
    (for body damage: the body panels at its location; for a wheel: the wheel and what lies
    under it, such as the road its shreds fall on)."""
    freq = SynthFrequencies(p_undamaged=0.0, severity={"minor": 1.0}, damage_types={kind: 1.0})
    drawn = 0
    for i in range(8):
        scene_rng, damage_rng, _ = np.random.default_rng([9, i]).spawn(3)
        canvas = draw_scene(scene_rng, SIZE * SUPERSAMPLE, freq.views)
        clean = np.asarray(canvas.image).copy()
        damages = damage_car(damage_rng, canvas, freq)
        changed = (np.asarray(canvas.image) != clean).any(axis=2)
        allowed = np.zeros(256, dtype=bool)
        for d in damages:
            part = next(j for j, p in enumerate(canvas.car.parts) if p.name == d.part)
            allowed[np.arange(part + 2) if kind == "wheel" else same_group(canvas, part)] = True
        assert not (changed & ~allowed[canvas.ids]).any(), (kind, i)
        assert changed.any() == bool(damages)
        drawn += len(damages)
    assert drawn >= 3


def test_labels_are_what_was_drawn(many: list[SynthSample]) -> None:
    for s in many:
        assert s.image.size == (SIZE, SIZE)
        assert s.location == tuple(x for x in LOCATIONS if x in {d.location for d in s.damages})
        assert s.damage_type == tuple(k for k in DAMAGE_TYPES if k in {d.kind for d in s.damages})
        assert s.severity == severity_for_extent(s.extent)
        if not s.damages:
            assert (s.severity, s.location, s.damage_type) == ("whole", (), ())
        for d in s.damages:
            x0, y0, x1, y1 = d.bbox
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            assert x0 <= d.center[0] <= x1 and y0 <= d.center[1] <= y1
            if d.kind == "glass":
                assert d.part in GLASS_PARTS
            elif d.kind == "wheel":
                assert d.part in WHEEL_PARTS and d.location == "side"
            else:
                assert d.part not in GLASS_PARTS | WHEEL_PARTS


def test_damage_sits_on_its_part() -> None:
    """Redraw the undamaged scene: the part under each damage's centre is the one it names."""
    freq = SynthFrequencies(p_undamaged=0.0)
    for i in range(20):
        sample = draw_sample(np.random.default_rng([3, i]), SIZE, freq)
        scene_rng = np.random.default_rng([3, i]).spawn(3)[0]
        canvas = draw_scene(scene_rng, SIZE * SUPERSAMPLE, freq.views)
        for d in sample.damages:
            x, y = (int(c * SUPERSAMPLE) for c in d.center)
            part = canvas.car.parts[canvas.ids[y, x] - 1]
            expected = {"glass": "glass", "wheel": "wheel"}.get(d.kind, "body")
            assert (part.surface, part.location, part.name) == (expected, d.location, d.part)


def test_severity_is_monotone_in_extent(many: list[SynthSample]) -> None:
    ranked = sorted(many, key=lambda s: s.extent)
    order = ("whole", "minor", "moderate", "severe")
    ranks = [order.index(s.severity) for s in ranked]
    assert ranks == sorted(ranks)
    assert severity_for_extent(0.0) == "whole"


def test_damage_changes_only_its_region() -> None:
    on, off = SynthFrequencies(p_undamaged=0.0), SynthFrequencies(p_undamaged=1.0)
    margin = 4  # blur and the 2x reduction spread a change by a few pixels
    for i in range(12):
        damaged = draw_sample(np.random.default_rng([5, i]), SIZE, on)
        clean = draw_sample(np.random.default_rng([5, i]), SIZE, off)
        assert clean.damages == () and damaged.damages and clean.view == damaged.view
        diff = np.abs(np.asarray(damaged.image, int) - np.asarray(clean.image, int)).max(axis=2)
        outside = np.ones_like(diff, dtype=bool)
        for d in damaged.damages:
            x0, y0, x1, y1 = d.bbox
            outside[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin] = False
        assert diff[outside].max(initial=0) <= 2
        assert diff[~outside].max() > 20


def test_smallest_damages_are_visible_at_128_px() -> None:
    for s in samples(60, SynthFrequencies(p_undamaged=0.0), size=128):
        for d in s.damages:
            assert min(d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]) >= 4


def test_frequencies_are_near_the_configured_ones(many: list[SynthSample]) -> None:
    freq = SynthFrequencies()
    n = len(many)
    severities = Counter(s.severity for s in many)
    assert severities["whole"] / n == pytest.approx(freq.p_undamaged, abs=0.06)
    damaged = n - severities["whole"]
    total = sum(freq.severity.values())
    for name, weight in freq.severity.items():
        assert severities[name] / damaged == pytest.approx(weight / total, abs=0.08)
    for task, labels in (("location", LOCATIONS), ("damage_type", DAMAGE_TYPES)):
        seen = Counter(x for s in many for x in getattr(s, task))
        assert all(seen[label] >= 0.05 * n for label in labels), (task, seen)


def test_damage_type_weights_are_followed_where_all_kinds_show() -> None:
    """Side views are close-ups: count the single-damage cars whose photo shows a wheel and a
    window, so that every kind could have been drawn."""
    freq = SynthFrequencies(
        p_undamaged=0.0,
        views={"side": 1.0},
        severity={"minor": 1.0},
        damage_types={"dent": 1, "glass": 1, "paint": 1, "wheel": 2},
    )
    size = SIZE * SUPERSAMPLE
    kinds: Counter[str] = Counter()
    for i in range(150):
        sample = draw_sample(np.random.default_rng([7, i]), SIZE, freq)
        canvas = draw_scene(np.random.default_rng([7, i]).spawn(3)[0], size, freq.views)
        wheels = [w for w in canvas.car.wheels if all(0 <= c < size for c in w.center)]
        if wheels and len(canvas.shown(lambda p: p.surface == "glass")):
            kinds.update(d.kind for d in sample.damages)
    total = sum(kinds.values())
    assert total >= 60
    assert kinds["wheel"] / total == pytest.approx(0.4, abs=0.1)
    for kind in ("dent", "glass", "paint"):
        assert kinds[kind] / total == pytest.approx(0.2, abs=0.08)


def test_extents_sit_in_their_severity_bands(many: list[SynthSample]) -> None:
    """Damage is redrawn until its measured extent lands in the chosen severity's band, so the
    classes stay apart: nearly no car falls in the gaps between the bands."""
    damaged = [s for s in many if s.damages]
    inside = [s for s in damaged if _in_band(s)]
    assert len(inside) >= 0.97 * len(damaged)
    for s in damaged:
        assert all(d.area > 0 for d in s.damages)
        assert s.extent == pytest.approx(sum(d.area for d in s.damages))
    counts = {
        sev: np.mean([len(s.damages) for s in damaged if s.severity == sev])
        for sev in SEVERITIES[:3]
    }
    assert counts["minor"] < counts["moderate"] < counts["severe"]  # worse: more damages


def _in_band(s: SynthSample) -> bool:
    low, high = BANDS[s.severity]
    return low <= s.extent <= high


def test_extent_is_what_the_photo_shows() -> None:
    """The extent is measured on the drawing: the pixels the damage changed in the finished
    photo, over the car's pixels in it, agree with it."""
    on, off = SynthFrequencies(p_undamaged=0.0), SynthFrequencies(p_undamaged=1.0)
    size = SIZE * SUPERSAMPLE
    extents, seen = [], []
    for i in range(40):
        damaged = draw_sample(np.random.default_rng([5, i]), SIZE, on)
        clean = draw_sample(np.random.default_rng([5, i]), SIZE, off)
        canvas = draw_scene(np.random.default_rng([5, i]).spawn(3)[0], size, on.views)
        car = np.count_nonzero(canvas.ids) / SUPERSAMPLE**2
        diff = np.abs(np.asarray(damaged.image, int) - np.asarray(clean.image, int)).max(axis=2)
        extents.append(damaged.extent)
        seen.append(np.count_nonzero(diff > VISIBLE) / car)
    ratio = np.array(seen) / np.array(extents)
    assert 0.4 < np.median(ratio) < 1.2
    ranks = np.argsort(np.argsort(extents)), np.argsort(np.argsort(seen))
    assert np.corrcoef(*ranks)[0, 1] > 0.85  # Spearman


def test_a_cap_of_one_damage_still_draws_severe_cars() -> None:
    """Severe cars usually get three damages; capped at one, they get one (no crash)."""
    freq = SynthFrequencies(p_undamaged=0.0, severity={"severe": 1.0}, max_damages=1)
    drawn = samples(6, freq)
    assert all(len(s.damages) <= 1 for s in drawn)
    assert any(s.damages for s in drawn)


@pytest.mark.parametrize(
    "bad",
    [
        {"p_undamaged": 1.5},
        {"max_damages": 0},
        {"damage_types": {"rust": 1.0}},
        {"severity": {"minor": 0.0}},
        {"views": {"side": -1.0}},
    ],
)
def test_invalid_frequencies_are_rejected(bad: dict) -> None:
    with pytest.raises(CardamageError):
        SynthFrequencies(**bad)


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_manifest_lists_readable_images(tmp_path: Path) -> None:
    manifest = generate_dataset(tmp_path, n=12, size=SIZE, seed=1)
    assert manifest == tmp_path / "labels.csv"
    assert manifest.read_text().splitlines()[0] == "image,severity,location,damage_type"
    rows = read_manifest(manifest)
    assert len(rows) == 12
    for row in rows:
        assert row["image"].startswith("images/") and row["image"].endswith(".jpg")
        with Image.open(tmp_path / row["image"]) as image:
            image.load()
            assert image.size == (SIZE, SIZE) and image.mode == "RGB"
        assert row["severity"] in SEVERITIES
        for task, labels in (("location", LOCATIONS), ("damage_type", DAMAGE_TYPES)):
            values = row[task].split(";") if row[task] else []
            assert values == [x for x in labels if x in values]
            assert (row["severity"] == "whole") == (values == [])


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    def files(out: Path, seed: int, n: int = 5, workers: int = 1) -> dict[str, bytes]:
        generate_dataset(out, n=n, size=SIZE, seed=seed, workers=workers)
        return {
            str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
        }

    first = files(tmp_path / "a", seed=2)
    assert first == files(tmp_path / "b", seed=2)
    other = files(tmp_path / "c", seed=3)
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name.endswith(".jpg"))
    longer = files(tmp_path / "d", seed=2, n=7)  # a sample does not depend on n
    assert all(longer[name] == data for name, data in first.items() if name.endswith(".jpg"))


def test_worker_processes_change_nothing_but_speed(tmp_path: Path) -> None:
    def files(out: Path, workers: int) -> dict[str, bytes]:
        generate_dataset(out, n=130, size=48, seed=4, workers=workers)
        return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    assert files(tmp_path / "one", 1) == files(tmp_path / "two", 2)
