"""Importers: COCO, class folders and the original CSV become a tidy, grouped manifest."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.data.importers import import_coco, import_folders, import_original_csv
from cardamage.data.inspect import label_counts
from cardamage.data.manifest import load_manifest
from cardamage.errors import CardamageError
from cardamage.tasks import Task, TaskKind

SEVERITY = Task("severity", TaskKind.MULTICLASS, ("minor", "moderate", "severe", "whole"))
LOCATION = Task("location", TaskKind.MULTILABEL, ("front", "rear", "side"))
DAMAGE = Task("damage_type", TaskKind.MULTILABEL, ("dent", "glass", "paint", "wheel"))
TASKS = [SEVERITY, LOCATION, DAMAGE]
CATEGORIES = ["severity-damage", "minor-scratch", "moderate-dent", "severe-dent", "minor-dent"]
MAPPING = {
    "categories": {
        "minor-scratch": {"severity": "minor", "damage_type": "paint"},
        "moderate-dent": {"severity": "moderate", "damage_type": "dent"},
        "severe-dent": {"severity": "severe", "damage_type": ["dent"]},
        "minor-dent": {"severity": "minor", "damage_type": "dent"},
    },
    "severity_order": ["minor", "moderate", "severe"],
    "no_boxes": {"severity": "whole"},
    "ignore": ["severity-damage"],
}
LENSOR = Path(__file__).resolve().parents[2] / "shared" / "data" / "lensor-coco"


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)


def _json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _coco(path: Path, boxes: dict[str, list[str]], categories=CATEGORIES) -> Path:
    """A COCO file: image file name -> the category names of its boxes."""
    category_ids = {name: i for i, name in enumerate(categories)}
    images = [{"id": i, "file_name": name} for i, name in enumerate(boxes)]
    annotations = [
        {"id": k, "image_id": i, "category_id": category_ids[c], "bbox": [0, 0, 1, 1]}
        for k, (i, c) in enumerate((i, c) for i, cs in enumerate(boxes.values()) for c in cs)
    ]
    categories = [{"id": i, "name": name} for name, i in category_ids.items()]
    return _json(path, {"images": images, "annotations": annotations, "categories": categories})


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """A Roboflow-like export: annotations/instances_<split>.json, images/<split>/."""
    boxes = {
        "train": {
            "a_jpg.rf.1.jpg": ["minor-scratch", "moderate-dent", "minor-dent"],
            "a_jpg.rf.2.jpg": ["severe-dent", "minor-scratch", "severity-damage"],
            "b_jpg.rf.3.jpg": [],
        },
        "val": {"c.png": ["severity-damage"]},
    }
    for seed, (split, files) in enumerate(boxes.items()):
        _coco(tmp_path / "annotations" / f"instances_{split}.json", files)
        for k, name in enumerate(files):
            _image(tmp_path / "images" / split / name, 10 * seed + k)
    _json(tmp_path / "mapping.json", MAPPING)
    return tmp_path


def _import(export: Path, *splits: str, mapping: Path | None = None, tasks=TASKS):
    files = [export / "annotations" / f"instances_{s}.json" for s in splits or ("train", "val")]
    mapping = mapping or export / "mapping.json"
    return import_coco(files, export / "images", mapping, export / "labels.csv", tasks)


def test_coco_worst_severity_union_of_types_no_boxes_and_groups(export):
    report = _import(export)
    assert _rows(export / "labels.csv") == [
        {
            "image": "train/a_jpg.rf.1.jpg",
            "severity": "moderate",
            "damage_type": "dent;paint",
            "group": "a",
        },
        {
            "image": "train/a_jpg.rf.2.jpg",
            "severity": "severe",
            "damage_type": "dent;paint",
            "group": "a",
        },
        {"image": "train/b_jpg.rf.3.jpg", "severity": "whole", "damage_type": "", "group": "b"},
        {"image": "val/c.png", "severity": "whole", "damage_type": "", "group": "val/c.png"},
    ]
    assert [t.name for t in report.tasks] == ["severity", "damage_type"]
    assert report.missing_tasks == ("location",)
    assert (report.rows, report.groups, report.problems) == (4, 3, ())
    summary = report.summary()
    assert "not in the source: location" in summary
    assert "severity: minor 0, moderate 1, severe 1, whole 2" in summary
    assert "2 images without boxes took no_boxes: severity whole" in summary
    manifest, problems = load_manifest(export / "labels.csv", export / "images", report.tasks)
    assert problems == [] and manifest.groups == ("a", "a", "b", "val/c.png")


def test_coco_order_comes_from_the_mapping(export):
    reverse = {**MAPPING, "severity_order": ["severe", "moderate", "minor"]}
    report = _import(export, "train", mapping=_json(export / "reverse.json", reverse))
    assert report.manifest.labels["severity"][:2] == (("minor",), ("minor",))


def test_coco_missing_image_is_reported_and_left_out(export):
    (export / "images" / "train" / "b_jpg.rf.3.jpg").unlink()
    (export / "images" / "val" / "c.png").write_bytes(b"")
    report = _import(export)
    assert report.rows == 2
    messages = [str(p) for p in report.problems]
    assert "instances_train.json: image 'b_jpg.rf.3.jpg': not found (looked for" in messages[0]
    assert "instances_val.json: image 'c.png': cannot read image" in messages[1]
    assert "2 images left out:" in report.summary()


def test_coco_file_name_relative_to_the_root(tmp_path):
    _image(tmp_path / "pics" / "x" / "one.jpg", 1)
    coco = _coco(tmp_path / "coco.json", {"x/one.jpg": ["minor-dent"]})
    report = import_coco(
        coco, tmp_path / "pics", _json(tmp_path / "m.json", MAPPING), tmp_path / "out.csv", TASKS
    )
    assert report.manifest.images == ("x/one.jpg",)


def test_coco_image_without_a_multiclass_label_is_a_problem(export):
    mapping = {**MAPPING, "no_boxes": {"damage_type": []}}
    report = _import(export, mapping=_json(export / "m.json", mapping))
    assert report.rows == 2
    assert "no label for 'severity'" in str(report.problems[0])


def test_nothing_to_import_is_an_error(export):
    for image in (export / "images").rglob("*.*"):
        image.unlink()
    with pytest.raises(CardamageError, match=r"nothing to import: no usable image \(4 left out\)"):
        _import(export)
    assert not (export / "labels.csv").exists()


@pytest.mark.parametrize(
    ("coco", "culprits"),
    [
        ({"annotations": [], "categories": []}, ["no 'images' list", "instances_train.json"]),
        ({"images": {}, "annotations": [], "categories": []}, ["'images' should be a JSON array"]),
        (
            {"images": [{"id": 0}], "annotations": [], "categories": []},
            ["images[0] has no 'file_name'"],
        ),
        (
            {"images": [{"id": "0", "file_name": "a"}], "annotations": [], "categories": []},
            ["images[0].id should be a JSON integer, found a string"],
        ),
        (
            {
                "images": [{"id": 0, "file_name": "a"}],
                "categories": [{"id": 1, "name": "minor-dent"}],
                "annotations": [{"image_id": 0, "category_id": 7}],
            },
            ["annotations[0].category_id 7 is no category's id (ids: 1)"],
        ),
        (
            {
                "images": [{"id": 0, "file_name": "a"}],
                "categories": [],
                "annotations": [{"image_id": 3, "category_id": 7}],
            },
            ["annotations[0].image_id 3 is no image's id"],
        ),
        ([], ["the top level should be a JSON object, found an array"]),
    ],
)
def test_malformed_coco(export, coco, culprits):
    _json(export / "annotations" / "instances_train.json", coco)
    with pytest.raises(CardamageError) as error:
        _import(export, "train")
    assert all(c in str(error.value) for c in culprits), str(error.value)


def test_bad_json_names_line_and_column(export):
    path = export / "annotations" / "instances_train.json"
    path.write_text('{\n  "images": [],\n  "annotations": [,]\n}\n', encoding="utf-8")
    with pytest.raises(CardamageError, match=r"instances_train\.json:3:19: invalid JSON"):
        _import(export, "train")


def test_unmapped_category_names_category_and_mapping(export):
    mapping = {**MAPPING, "ignore": [], "categories": dict(MAPPING["categories"])}  # a copy
    del mapping["categories"]["minor-dent"]
    with pytest.raises(CardamageError) as error:
        _import(export, mapping=_json(export / "m.json", mapping))
    message = str(error.value)
    assert "m.json" in message and "'minor-dent', 'severity-damage'" in message
    assert "add to 'ignore'" in message and "\n" not in message


@pytest.mark.parametrize(
    ("change", "culprits"),
    [
        (
            {"categories": {"minor-dent": {"severity": "minr"}}},
            ["categories.minor-dent.severity", "unknown label 'minr'", "did you mean 'minor'?"],
        ),
        (
            {"categories": {"minor-dent": {"damage": "dent"}}},
            ["unknown task 'damage'", "did you mean 'damage_type'?"],
        ),
        (
            {"categories": {"minor-dent": {"severity": ["minor", "severe"]}}},
            ["multiclass task 'severity' takes one label, found 2"],
        ),
        ({"no_boxes": {"severity": "nothing"}}, ["no_boxes.severity", "unknown label 'nothing'"]),
        ({"severity_order": ["minor", "moderate"]}, ["severity_order does not rank 'severe'"]),
        ({"severity_order": ["minor", "bad"]}, ["severity_order", "unknown label 'bad'"]),
        ({"no_box": {}}, ["unknown key 'no_box'", "did you mean 'no_boxes'?"]),
        ({"categories": []}, ["'categories' should be a JSON object, found an array"]),
    ],
)
def test_bad_mapping(export, change, culprits):
    mapping = {**MAPPING, **change}
    with pytest.raises(CardamageError) as error:
        _import(export, mapping=_json(export / "m.json", mapping))
    message = str(error.value)
    assert "m.json" in message and all(c in message for c in culprits), message


def test_folders(tmp_path):
    for name, seed in [
        ("dent/a.jpg", 1),
        ("dent/more/b.png", 2),
        ("paint/c.jpg", 3),
        ("loose.jpg", 4),
        (".hidden/d.jpg", 5),
    ]:
        _image(tmp_path / "photos" / name, seed)
    (tmp_path / "photos" / "paint" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "paint" / "broken.jpg").write_bytes(b"")
    report = import_folders(tmp_path / "photos", "damage_type", tmp_path / "out.csv", TASKS)
    assert _rows(tmp_path / "out.csv") == [
        {"image": "dent/a.jpg", "damage_type": "dent", "group": "dent/a.jpg"},
        {"image": "dent/more/b.png", "damage_type": "dent", "group": "dent/more/b.png"},
        {"image": "paint/c.jpg", "damage_type": "paint", "group": "paint/c.jpg"},
    ]
    assert report.missing_tasks == ("severity", "location")
    assert [(p.file.name, p.message.split(":")[0]) for p in report.problems] == [
        ("loose.jpg", "not in a class folder"),
        ("broken.jpg", "cannot read image 'paint/broken.jpg'"),
    ]


def test_folders_unknown_label_or_task(tmp_path):
    _image(tmp_path / "dnet" / "a.jpg", 1)
    with pytest.raises(CardamageError, match=r"unknown damage_type label \(folder\) 'dnet'.*dent"):
        import_folders(tmp_path, "damage_type", tmp_path / "out.csv", TASKS)
    with pytest.raises(CardamageError, match="unknown task 'damage'"):
        import_folders(tmp_path, "damage", tmp_path / "out.csv", TASKS)


def test_original_csv(tmp_path):
    for k, name in enumerate(["a.jpg", "b.jpg"]):
        _image(tmp_path / "img" / name, k)
    source = tmp_path / "original.csv"
    source.write_text(
        "name,damage,location,damagetype\n"
        "a.jpg,minor,[front; side],NULL\n"
        "b.jpg,[severe],[],[dent;paint]\n"
        "c.jpg,minor,,\n",
        encoding="utf-8",
    )
    report = import_original_csv(source, tmp_path / "img", tmp_path / "out.csv", TASKS)
    assert _rows(tmp_path / "out.csv") == [
        {
            "image": "a.jpg",
            "severity": "minor",
            "location": "front;side",
            "damage_type": "",
            "group": "a.jpg",
        },
        {
            "image": "b.jpg",
            "severity": "severe",
            "location": "",
            "damage_type": "dent;paint",
            "group": "b.jpg",
        },
    ]
    assert report.missing_tasks == () and len(report.problems) == 1
    assert "'c.jpg' not found" in str(report.problems[0])


def test_original_csv_keeps_an_explicit_group_column(tmp_path):
    _image(tmp_path / "a.jpg", 1)
    _image(tmp_path / "b.jpg", 1)  # identical pixels: the explicit column still wins
    source = tmp_path / "tidy.csv"
    source.write_text("image,severity,group\na.jpg,minor,car1\nb.jpg,severe,car2\n")
    report = import_original_csv(source, tmp_path, tmp_path / "out.csv", [SEVERITY])
    assert report.manifest.groups == ("car1", "car2")


def test_original_csv_keeps_a_claim_column(tmp_path):
    _image(tmp_path / "a.jpg", 1)
    _image(tmp_path / "b.jpg", 2)
    source = tmp_path / "tidy.csv"
    source.write_text("image,severity,claim\na.jpg,minor,c1\nb.jpg,severe,c1\n")
    import_original_csv(source, tmp_path, tmp_path / "out.csv", [SEVERITY])
    assert _rows(tmp_path / "out.csv")[1]["claim"] == "c1"


@pytest.mark.skipif(not LENSOR.is_dir(), reason="../shared/data/lensor-coco is absent")
def test_lensor_coco_export(tmp_path):
    """The real Roboflow export: ~1,820 rows; the train split's ~3 copies per photo collapse."""
    types = ("dent", "scratch", "broken")
    mapping = {
        "categories": {
            f"{s}-{t}": {"severity": s, "damage_type": t}
            for s in ("minor", "moderate", "severe")
            for t in types
        },
        "severity_order": ["minor", "moderate", "severe"],
        "no_boxes": {"severity": "whole"},
        "ignore": ["severity-damage"],
    }
    tasks = [SEVERITY, LOCATION, Task("damage_type", TaskKind.MULTILABEL, types)]
    start = time.perf_counter()
    report = import_coco(
        sorted((LENSOR / "annotations").glob("instances_*.json")),
        LENSOR / "images",
        _json(tmp_path / "mapping.json", mapping),
        tmp_path / "lensor.csv",
        tasks,
    )
    seconds = time.perf_counter() - start
    manifest = report.manifest
    train_groups = {
        g for i, g in zip(manifest.images, manifest.groups, strict=True) if i[:6] == "train/"
    }
    print(f"lensor import: {seconds:.1f} s\n{report.summary()}")
    assert report.rows == 1820 and report.problems == ()
    assert report.missing_tasks == ("location",)
    assert 500 <= len(train_groups) <= 546
    assert {t.name: label_counts(manifest, t) for t in report.tasks} == {
        "severity": {"minor": 1131, "moderate": 499, "severe": 168, "whole": 22},
        "damage_type": {"dent": 457, "scratch": 1326, "broken": 202},
    }


def test_coco_keep_splits_writes_each_files_split(export):
    files = [export / "annotations" / f"instances_{s}.json" for s in ("train", "val")]
    report = import_coco(
        files, export / "images", export / "mapping.json", export / "labels.csv", TASKS, True
    )
    splits = {row["image"]: row["split"] for row in _rows(export / "labels.csv")}
    assert splits == {
        "train/a_jpg.rf.1.jpg": "train",
        "train/a_jpg.rf.2.jpg": "train",
        "train/b_jpg.rf.3.jpg": "train",
        "val/c.png": "val",
    }
    assert "group, split)" in report.summary()
    odd = export / "annotations" / "instances_extra.json"
    shutil.copy(files[0], odd)
    with pytest.raises(CardamageError, match=r"instances_extra.json: no split in its name"):
        import_coco(
            [odd], export / "images", export / "mapping.json", export / "out.csv", TASKS, True
        )
