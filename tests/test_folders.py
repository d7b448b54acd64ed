"""Class folders read as a manifest: layouts, the task they label, splits, leakage, and the
layout mistakes a downloaded data set has, each named by its path."""

from __future__ import annotations

import shutil
from itertools import combinations
from pathlib import Path

import pytest
from folder_support import copy_photo, make_tree

from cardamage.cli import main as cli
from cardamage.data.folders import read_folders
from cardamage.data.groups import hash_images, near_pairs
from cardamage.data.leakage import split_leaks
from cardamage.data.manifest import ManifestError, load_manifest, write_manifest
from cardamage.data.sources import load_labelled
from cardamage.errors import CardamageError
from cardamage.tasks import Task, TaskKind, default_tasks

SPLITS = {"train": 4, "valid": 2, "test": 2}


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("split") / "cars", SPLITS)


def test_plain_class_folders_make_one_task_of_their_names(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", classes=("scratch", "dent"))
    found = read_folders(root)
    assert found.task == Task("label", TaskKind.MULTICLASS, ("dent", "scratch"))
    assert found.manifest.splits is None and len(found.manifest) == 12
    assert found.manifest.image_root == root.resolve()
    for image, labels in zip(found.manifest.images, found.manifest.labels["label"], strict=True):
        assert Path(image).parts[0] == labels[0]  # the folder is the label
    assert found.notes == ()


def test_split_folders_give_the_split_column(split_tree: Path) -> None:
    found = read_folders(split_tree)
    manifest = found.manifest
    assert manifest.splits is not None
    assert {s: manifest.splits.count(s) for s in ("train", "val", "test")} == {
        "train": 12,
        "val": 6,  # 'valid' (Roboflow's name) is val
        "test": 6,
    }
    for image, split in zip(manifest.images, manifest.splits, strict=True):
        assert image.startswith({"train": "train/", "val": "valid/", "test": "test/"}[split])
    assert list(manifest.rows_in("test")) == [
        i for i, s in enumerate(manifest.splits) if s == "test"
    ]


def test_a_default_task_name_takes_its_label_order_and_says_what_is_missing(
    split_tree: Path,
) -> None:
    found = read_folders(split_tree, "severity")
    severity = next(t for t in default_tasks() if t.name == "severity")
    assert found.task.labels == tuple(x for x in severity.labels if x != "whole")
    assert found.notes == ("severity labels with no folder (not learned): whole",)


def test_a_configured_task_wins_and_folders_must_be_its_labels(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", classes=("minor", "severe"))
    configured = Task("damage", TaskKind.MULTICLASS, ("severe", "minor", "total"))
    found = read_folders(root, None, [configured])
    assert found.task == configured
    assert found.notes == ("damage labels with no folder (not learned): total",)
    with pytest.raises(CardamageError, match=r"cars/severe: 'severe' is no damage2 label"):
        read_folders(root, None, [Task("damage2", TaskKind.MULTICLASS, ("minor", "moderate"))])
    with pytest.raises(CardamageError, match="name one with --task"):
        read_folders(root, None, default_tasks())


def _mistakes(root: Path, **options) -> str:
    with pytest.raises(CardamageError) as caught:
        read_folders(root, **options)
    return str(caught.value)


def test_layout_mistakes_are_named_by_path_all_at_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", {"train": 2, "val": 1, "test": 1})
    (root / "train" / "whole").mkdir()  # empty class folder
    (root / "test" / "totalled").mkdir()  # a test class training lacks...
    shutil.copy(root / "test" / "minor" / "minor_test_0.jpg", root / "test" / "totalled")
    shutil.copy(root / "train" / "minor" / "minor_train_0.jpg", root / "train" / "loose.jpg")
    shutil.rmtree(root / "val")
    (root / "val").mkdir()  # a split with no class folders
    message = _mistakes(root)
    assert f"{root}/train/whole: empty class folder" in message
    assert f"{root}/train: photos loose beside the class folders, in no class: loose.jpg" in message
    assert f"{root}/test/totalled: class 'totalled' is in test but not in train" in message
    assert f"{root}/val: no class folders" in message
    assert message.startswith(f"{root} has 4 layout problems:")


def test_folders_beside_splits_and_photos_loose_in_the_root(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", {"train": 2, "test": 1})
    (root / "extra").mkdir()
    shutil.copy(root / "train" / "minor" / "minor_train_0.jpg", root / "stray.jpg")
    message = _mistakes(root)
    assert "folder 'extra' beside the split folders 'test', 'train'" in message
    assert "photos beside the split folders, in none: stray.jpg" in message


def test_no_train_split_and_too_few_classes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "a", {"val": 1, "test": 1})
    assert "split folders 'test', 'val' but no 'train'" in _mistakes(root)
    one = make_tree(tmp_path / "b", classes=("minor",))
    assert "at least 2 class folders, found only 'minor'" in _mistakes(one)


def test_a_fixed_validation_split_needs_train_to_have_its_classes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", {"train": 2, "val": 1})
    make_tree(tmp_path / "extra", {"val": 1}, classes=("whole",))
    shutil.copytree(tmp_path / "extra" / "val" / "whole", root / "val" / "whole")
    assert len(read_folders(root).task.labels) == 4  # val joins training: it learns 'whole'
    assert f"{root}/val/whole: class 'whole' is in val but not in train" in _mistakes(
        root, fixed_val=True
    )


def test_unreadable_photos_refused_or_left_out_with_skip_bad(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars")
    bad = root / "moderate" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(ManifestError, match=r"1 photo under .* cannot be used \(--skip-bad") as e:
        load_labelled(root, root, default_tasks(), configured=False)
    assert [p.file for p in e.value.problems] == [bad.resolve()]
    found = load_labelled(root, root, default_tasks(), configured=False, skip_bad=True)
    assert len(found.manifest) == 18 and "moderate/broken.jpg" not in found.manifest.images
    assert [p.file for p in found.problems] == [bad.resolve()]


def test_near_identical_photos_across_splits_are_leaks(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", {"train": 3, "test": 2})
    copy_photo(root / "train" / "minor" / "minor_train_0.jpg", root / "test" / "minor" / "c.jpg")
    copy_photo(
        root / "train" / "severe" / "severe_train_1.jpg", root / "train" / "severe" / "d.jpg"
    )
    found = load_labelled(root, root, default_tasks(), configured=False)
    assert [(k.split, k.image, k.other_split, k.other_image) for k in found.leaks] == [
        ("train", "train/minor/minor_train_0.jpg", "test", "test/minor/c.jpg")
    ]  # the copy within train is a group, not a leak
    groups = dict(zip(found.manifest.images, found.manifest.groups, strict=True))
    assert groups["train/severe/d.jpg"] == groups["train/severe/severe_train_1.jpg"]
    # a test copy never joins a training photo's group (folds stay as without the test split)
    assert groups["test/minor/c.jpg"] != groups["train/minor/minor_train_0.jpg"]


def test_near_pairs_match_a_brute_force_search(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", {"train": 3})
    for i in range(3):
        source = root / "train" / "minor" / f"minor_train_{i}.jpg"
        copy_photo(source, root / "train" / "minor" / f"copy{i}.jpg")
    shutil.copy(source, root / "train" / "minor" / "exact.jpg")
    paths = sorted((root / "train").rglob("*.jpg"))
    hashes = hash_images(paths)
    expected = [
        (i, j, (hashes[i] ^ hashes[j]).bit_count())
        for i, j in combinations(range(len(paths)), 2)
        if (hashes[i] ^ hashes[j]).bit_count() <= 6
    ]
    assert near_pairs(hashes) == expected and len(expected) >= 4


def test_split_column_in_a_csv_manifest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "cars", {"train": 2, "valid": 1, "test": 1})
    found = read_folders(root)
    tasks = [found.task]
    write_manifest(found.manifest, tmp_path / "labels.csv", tasks)
    manifest, problems = load_manifest(tmp_path / "labels.csv", root, tasks)
    assert not problems and manifest.splits == found.manifest.splits
    assert split_leaks(manifest) == []
    text = (tmp_path / "labels.csv").read_text().replace(",test\n", ",holdout\n", 1)
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ManifestError, match=r"bad.csv:\d+: 'split' is 'holdout', not one of"):
        load_manifest(tmp_path / "bad.csv", root, tasks)


def test_data_inspect_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_tree(tmp_path / "cars", {"train": 3, "val": 1, "test": 2})
    copy_photo(root / "train" / "minor" / "minor_train_0.jpg", root / "test" / "minor" / "c.jpg")
    assert cli(["data", "inspect", str(root), "--task", "severity"]) == 0
    out = capsys.readouterr().out
    assert "severity labels with no folder (not learned): whole" in out
    assert "splits: train 9, val 3, test 7" in out
    assert "leakage: 1 near-identical photo pair across splits (test/train 1)" in out
    assert "train train/minor/minor_train_0.jpg ~ test test/minor/c.jpg" in out
    (root / "train" / "dent").mkdir()
    assert cli(["data", "inspect", "--data", str(root)]) == 2
    assert f"{root}/train/dent: empty class folder" in capsys.readouterr().err


def test_run_data_sets_test_apart_and_records_the_inferred_task(tmp_path: Path) -> None:
    from cardamage.config import load_train_config
    from cardamage.train.splits import read_run_data

    root = make_tree(tmp_path / "cars", {"train": 4, "test": 2})
    options = {"data": root, "out": tmp_path / "run", "folds": 2, "task": "severity"}
    data = read_run_data(load_train_config(None, options))
    assert len(data.manifest) == 12 and set(data.manifest.splits) == {"train"}
    assert len(data.test) == 6 and set(data.test.splits) == {"test"}
    assert [t.to_task() for t in data.cfg.data.tasks] == data.tasks  # what config.json records
    assert data.cfg.image_root == root
    assert sorted(i for _, val in data.splits for i in val) == list(range(12))
    with pytest.raises(CardamageError, match="--val-split needs train photos and at least 2 val"):
        read_run_data(load_train_config(None, options | {"val_split": True}))
    with pytest.raises(CardamageError, match="drop --images"):
        read_run_data(load_train_config(None, options | {"images": tmp_path}))


def test_label_corrections_keep_the_split_column(tmp_path: Path) -> None:
    from cardamage.metrics.label_review import apply_corrections

    root = make_tree(tmp_path / "cars", {"train": 2, "test": 1})
    found = read_folders(root)
    write_manifest(found.manifest, tmp_path / "labels.csv", [found.task])
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("image,label\ntest/minor/minor_test_0.jpg,severe\n")
    out = tmp_path / "fixed.csv"
    assert apply_corrections(fixes, tmp_path / "labels.csv", root, [found.task], out) == 1
    fixed, _ = load_manifest(out, root, [found.task])
    assert fixed.splits == found.manifest.splits
    assert fixed.labels["label"][fixed.images.index("test/minor/minor_test_0.jpg")] == ("severe",)
