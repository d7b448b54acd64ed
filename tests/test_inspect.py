"""The inspect report: counts, co-occurrence, imbalance, groups and problems, all in one read."""

from __future__ import annotations

from pathlib import Path

from cardamage.data.inspect import (
    imbalance_ratio,
    inspect_manifest,
    label_counts,
    label_groups,
)
from cardamage.data.manifest import Manifest, Problem
from cardamage.tasks import Task, TaskKind

SEVERITY = Task("severity", TaskKind.MULTICLASS, ("minor", "moderate", "severe"))
DAMAGE = Task("damage_type", TaskKind.MULTILABEL, ("dent", "paint", "glass"))


def _manifest(groups: tuple[str, ...] | None = ("a", "a", "a", "b", "c")) -> Manifest:
    return Manifest(
        source=Path("labels.csv"),
        image_root=Path("/data"),
        images=("1.jpg", "2.jpg", "3.jpg", "4.jpg", "5.jpg"),
        labels={
            "severity": (("minor",), ("minor",), ("minor",), ("minor",), ("moderate",)),
            "damage_type": (("dent", "paint"), ("dent",), ("dent", "paint"), (), ("paint",)),
        },
        groups=groups,
        lines=(2, 3, 4, 5, 6),
    )


def test_counts_and_imbalance():
    manifest = _manifest()
    assert label_counts(manifest, SEVERITY) == {"minor": 4, "moderate": 1, "severe": 0}
    assert label_counts(manifest, DAMAGE) == {"dent": 3, "paint": 3, "glass": 0}
    assert imbalance_ratio({"a": 4, "b": 1, "c": 0}) == 4.0
    assert imbalance_ratio({"a": 0}) is None
    assert label_groups(manifest, DAMAGE) == {"dent": 1, "paint": 2, "glass": 0}
    assert label_groups(_manifest(groups=None), DAMAGE) is None


def test_no_few_groups_warning_when_labels_span_many_photos():
    n = 20
    manifest = Manifest(
        source=Path("labels.csv"),
        image_root=Path("/data"),
        images=tuple(f"{i}.jpg" for i in range(n)),
        labels={"severity": tuple(("minor",) if i % 2 else ("moderate",) for i in range(n))},
        groups=tuple(f"g{i}" for i in range(n)),
        lines=tuple(range(2, n + 2)),
    )
    text = inspect_manifest(manifest, [SEVERITY])
    assert "  minor         10  50.0%      10" in text.splitlines()
    assert "few source photos" not in text


def test_report_sections():
    problems = [Problem(Path("labels.csv"), 7, "image 'x.jpg' not found under /data")]
    text = inspect_manifest(_manifest(), [SEVERITY, DAMAGE], problems)
    lines = text.splitlines()
    assert lines[0] == "5 images in labels.csv (under /data); 0 with no label in any task"
    assert "  label     images  share  groups" in lines
    assert "  minor          4  80.0%       2" in lines
    assert "  moderate       1  20.0%       1" in lines
    absent = "no image at all (cannot be learned): severe"
    assert f"imbalance: 4.0 (minor 4 / moderate 1); {absent}" in lines
    assert "  (none)       1  20.0%       1" in lines
    few = "few source photos (groups, under 10): minor 2, moderate 1: per-fold scores"
    assert any(line.startswith(few) for line in lines)
    assert "labels per image (labels: images): 0: 1, 1: 2, 2: 2" in lines
    matrix = lines[lines.index("co-occurrence (images with both labels):") + 1 :][:4]
    assert matrix == [
        "         dent  paint  glass",
        "  dent      3      2      0",
        "  paint     2      3      0",
        "  glass     0      0      0",
    ]
    assert "groups: 3 for 5 images" in lines
    assert "group sizes (images: groups): 1: 2, 3: 1" in lines
    assert "largest: 'a' (3 images)" in lines
    assert "problems: 1" in lines
    assert "  labels.csv:7: image 'x.jpg' not found under /data" in lines


def test_report_without_groups_or_labels():
    text = inspect_manifest(_manifest(groups=None), [DAMAGE], [])
    assert "1 with no label in any task" in text
    assert "groups: none (no group column)" in text
    assert "problems: none" in text


def test_report_of_an_empty_manifest():
    empty = Manifest(Path("x.csv"), Path("/d"), (), {"damage_type": ()}, None, ())
    problem = Problem(Path("x.csv"), None, "file is empty")
    text = inspect_manifest(empty, [DAMAGE], [problem])
    assert "0 images in x.csv" in text
    assert "imbalance: no label has any image" in text
    assert "  x.csv: file is empty" in text
