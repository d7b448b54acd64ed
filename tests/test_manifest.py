"""The manifest: both CSV formats read the same, and every problem is reported with its line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.data.manifest import (
    Manifest,
    ManifestError,
    Problem,
    load_manifest,
    read_manifest,
    write_manifest,
    write_problems,
)
from cardamage.tasks import Task, TaskKind

TASKS = [
    Task("severity", TaskKind.MULTICLASS, ("minor", "moderate", "severe", "whole")),
    Task("location", TaskKind.MULTILABEL, ("front", "rear", "side")),
    Task("damage_type", TaskKind.MULTILABEL, ("dent", "glass", "paint", "wheel")),
]
TIDY_HEADER = "image,severity,location,damage_type"
GOOD_ROW = "a.png,minor,front,dent"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "c.png", "d.png", "sub/e.png"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(images / name)
    return images


def _csv(tmp_path: Path, *lines: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _problems(tmp_path: Path, root: Path, *rows: str) -> list[Problem]:
    return read_manifest(_csv(tmp_path, TIDY_HEADER, *rows), root, TASKS)[1]


def test_both_formats_read_the_same(tmp_path, root):
    tidy = _csv(
        tmp_path,
        TIDY_HEADER,
        "a.png,minor,front;side,",
        "b.png,severe,,dent;paint",
        name="tidy.csv",
    )
    original = _csv(
        tmp_path,
        " Name , DAMAGE ,location,damagetype",
        "a.png,minor,[front; side],NULL",
        "b.png,[severe],[],[dent;paint]",
        name="original.csv",
    )
    a, problems_a = read_manifest(tidy, root, TASKS)
    b, problems_b = read_manifest(original, root, TASKS)
    assert problems_a == problems_b == []
    assert a.images == b.images == ("a.png", "b.png")
    assert (
        a.labels
        == b.labels
        == {
            "severity": (("minor",), ("severe",)),
            "location": (("front", "side"), ()),
            "damage_type": ((), ("dent", "paint")),
        }
    )
    assert a.lines == b.lines == (2, 3)
    assert a.groups is None and a.image_root == root.resolve() and a.source == tidy


@pytest.mark.parametrize("cell", ["", "[]", "NULL", "[NULL]", " [ ] "])
def test_no_label_spellings(tmp_path, root, cell):
    path = _csv(tmp_path, "name,damage,location,damagetype", f"a.png,minor,{cell},{cell}")
    manifest, problems = read_manifest(path, root, TASKS)
    assert problems == []
    assert manifest.labels["location"] == manifest.labels["damage_type"] == ((),)


def test_labels_come_in_task_order_and_targets_follow_it(tmp_path, root):
    path = _csv(tmp_path, TIDY_HEADER, "a.png,whole,side;front;side,wheel;dent", "b.png,minor,,")
    manifest, _ = read_manifest(path, root, TASKS)
    assert manifest.labels["location"] == (("front", "side"), ())
    np.testing.assert_array_equal(manifest.targets(TASKS[0]), [[0, 0, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(manifest.targets(TASKS[1]), [[1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(manifest.targets(TASKS[2]), [[1, 0, 0, 1], [0, 0, 0, 0]])


def test_paths_are_absolute_and_absolute_inputs_stored_relative(tmp_path, root):
    path = _csv(tmp_path, TIDY_HEADER, f"{root / 'sub' / 'e.png'},minor,,", "./a.png,minor,,")
    manifest, problems = read_manifest(path, root, TASKS)
    assert problems == []
    assert manifest.images == ("sub/e.png", "./a.png")
    assert all(p.is_absolute() and p.is_file() for p in manifest.paths())


def test_header_is_case_and_space_insensitive_bom_stripped_extra_columns_ignored(tmp_path, root):
    path = tmp_path / "labels.csv"
    path.write_text(
        '\ufeff Image ,Severity,notes, LOCATION ,damage_type\na.png,minor,"free, text",front,\n',
        encoding="utf-8",
    )
    manifest, problems = read_manifest(path, root, TASKS)
    assert problems == [] and manifest.labels["location"] == (("front",),)


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    return outside


@pytest.mark.parametrize(
    ("row", "culprits"),
    [
        (
            "b.png,minor,frnt,dent",
            [
                "unknown label 'frnt'",
                "'location'",
                "known: front, rear, side",
                "did you mean 'front'",
            ],
        ),
        ("b.png,minor,front,zzz", ["unknown label 'zzz'", "'damage_type'"]),
        ("b.png,,front,dent", ["'severity'", "no label", "minor, moderate"]),
        ("b.png,NULL,front,dent", ["'severity'", "no label"]),
        ("b.png,minor;severe,front,dent", ["'severity'", "2 labels", "'minor', 'severe'"]),
        ("a.png,severe,rear,glass", ["duplicate image 'a.png'", "line 2"]),
        ("./sub/../a.png,severe,rear,glass", ["duplicate image './sub/../a.png'", "line 2"]),
        ("../outside.png,minor,,", ["'../outside.png'", "outside the image root"]),
        ("OUTSIDE,minor,,", ["outside.png", "outside the image root"]),
        ("escape.png,minor,,", ["'escape.png'", "outside the image root"]),
        ("nope.png,minor,,", ["'nope.png'", "not found"]),
        ("sub,minor,,", ["'sub'", "is a directory"]),
        ("bad.png,minor,,", ["'bad.png'", "not an image"]),
        ("b.png,minor,front", ["expected 4 fields", "found 3"]),
        ("b.png,minor,front,dent,extra", ["expected 4 fields", "found 5"]),
        (",minor,,", ["empty image path"]),
    ],
)
def test_each_problem_names_line_and_culprit(tmp_path, root, row, culprits):
    outside = _outside(tmp_path)
    (root / "escape.png").symlink_to(outside)
    (root / "bad.png").write_text("not an image")
    problems = _problems(tmp_path, root, GOOD_ROW, row.replace("OUTSIDE", str(outside)))
    assert len(problems) == 1, problems
    assert problems[0].line == 3 and problems[0].file == tmp_path / "labels.csv"
    for culprit in culprits:
        assert culprit in problems[0].message


def test_problem_str_points_at_file_and_line(tmp_path):
    assert str(Problem(Path("labels.csv"), 12, "bad")) == "labels.csv:12: bad"
    assert str(Problem(Path("labels.csv"), None, "bad")) == "labels.csv: bad"


def test_all_problems_collected_in_one_pass(tmp_path, root):
    bad_rows = [
        "b.png,mnor,,",
        "nope.png,minor,,",
        "a.png,minor,,",
        "c.png,minor",
        "d.png,minor,front;bak,",
    ]
    problems = _problems(tmp_path, root, GOOD_ROW, "", *bad_rows, "sub/e.png,whole,,")
    assert [p.line for p in problems] == [4, 5, 6, 7, 8]


def test_one_row_can_have_several_problems(tmp_path, root):
    problems = _problems(tmp_path, root, "nope.png,mnor,frnt,")
    assert [p.line for p in problems][:3] == [2, 2, 2]


def test_line_numbers_survive_quoted_newlines(tmp_path, root):
    problems = _problems(tmp_path, root, 'a.png,minor,"front;\nside",', "nope.png,minor,,")
    assert [p.line for p in problems] == [4]


def test_group_column_is_read_and_must_be_filled(tmp_path, root):
    path = _csv(
        tmp_path,
        TIDY_HEADER + ",group",
        "a.png,minor,,,car1",
        "b.png,minor,,,car1",
        "c.png,minor,,,",
    )
    manifest, problems = read_manifest(path, root, TASKS)
    assert manifest.groups == ("car1", "car1")
    assert [(p.line, "'group'" in p.message) for p in problems] == [(4, True)]


def test_claim_column_is_optional_per_row_and_written_back(tmp_path, root):
    path = _csv(
        tmp_path,
        TIDY_HEADER + ",claim",
        "a.png,minor,front,dent,claim-1",
        "b.png,whole,,,claim-1",
        "c.png,minor,side,paint,",
    )
    manifest, problems = read_manifest(path, root, TASKS)
    assert problems == []
    assert manifest.claims == ("claim-1", "claim-1", "")
    assert manifest.subset([2, 0]).claims == ("", "claim-1")
    write_manifest(manifest, tmp_path / "out.csv", TASKS)
    again, _ = read_manifest(tmp_path / "out.csv", root, TASKS)
    assert again.claims == manifest.claims
    plain, _ = read_manifest(_csv(tmp_path, TIDY_HEADER, GOOD_ROW, name="p.csv"), root, TASKS)
    assert plain.claims is None


@pytest.mark.parametrize(
    ("header", "missing", "has"),
    [
        (
            "image,severity",
            "missing columns 'location', 'damage_type'",
            "header has: image, severity",
        ),
        (
            "name,damage,location",
            "missing column 'damagetype'",
            "header has: name, damage, location",
        ),
        ("file,severity,location,damage_type", "missing column 'image'", "header has: file"),
    ],
)
def test_missing_columns_are_fatal_and_named(tmp_path, root, header, missing, has):
    manifest, problems = read_manifest(_csv(tmp_path, header, GOOD_ROW), root, TASKS)
    assert len(manifest) == 0 and len(problems) == 1 and problems[0].line == 1
    assert missing in problems[0].message and has in problems[0].message


def test_repeated_column_is_fatal(tmp_path, root):
    path = _csv(tmp_path, "image,severity,Severity,location,damage_type", "a.png,minor,minor,,")
    _, problems = read_manifest(path, root, TASKS)
    assert len(problems) == 1 and "'severity'" in problems[0].message


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (None, None, "cannot read manifest"),
        (b"", None, "file is empty"),
        (b"\n\n", None, "file is empty"),
        (TIDY_HEADER.encode() + b"\n", None, "no data rows"),
        (TIDY_HEADER.encode() + b"\na.png,minor,,\nb.png,s\xe9v\xe8re,,\n", 3, "not UTF-8"),
    ],
)
def test_unusable_files_give_one_problem(tmp_path, root, content, line, message):
    path = tmp_path / "labels.csv"
    if content is not None:
        path.write_bytes(content)
    manifest, problems = read_manifest(path, root, TASKS)
    assert len(manifest) == 0 and len(problems) == 1
    assert problems[0].line == line and message in problems[0].message
    with pytest.raises(ManifestError):
        load_manifest(path, root, TASKS, skip_bad=True)


def test_missing_image_root_is_one_problem(tmp_path):
    _, problems = read_manifest(_csv(tmp_path, TIDY_HEADER, GOOD_ROW), tmp_path / "no", TASKS)
    assert len(problems) == 1 and "image root" in problems[0].message


def test_no_usable_rows_is_an_error_even_when_skipping(tmp_path, root):
    path = _csv(tmp_path, TIDY_HEADER, "nope.png,minor,,", "a.png,bad,,")
    manifest, problems = read_manifest(path, root, TASKS)
    assert len(manifest) == 0 and "all 2 data rows have problems" in problems[-1].message
    with pytest.raises(ManifestError):
        load_manifest(path, root, TASKS, skip_bad=True)


def test_load_raises_with_every_problem_unless_skipping(tmp_path, root):
    path = _csv(tmp_path, TIDY_HEADER, GOOD_ROW, "nope.png,minor,,", "b.png,mnor,,")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, root, TASKS)
    text = str(info.value).splitlines()
    assert text[0] == "manifest has 2 problems:" and len(info.value.problems) == 2
    assert text[1].startswith(f"{path}:3: ") and text[2].startswith(f"{path}:4: ")
    manifest, problems = load_manifest(path, root, TASKS, skip_bad=True)
    assert manifest.images == ("a.png",) and len(problems) == 2


def test_check_images_off_skips_decoding_not_existence(tmp_path, root):
    (root / "bad.png").write_text("not an image")
    path = _csv(tmp_path, TIDY_HEADER, "bad.png,minor,,", "nope.png,minor,,")
    manifest, problems = read_manifest(path, root, TASKS, check_images=False)
    assert manifest.images == ("bad.png",) and [p.line for p in problems] == [3]


def test_malformed_csv_is_a_problem_and_reading_goes_on(tmp_path, root):
    huge = "x" * 200_000
    problems = _problems(tmp_path, root, f'"{huge}",minor,,', "nope.png,minor,,", GOOD_ROW)
    assert [p.line for p in problems] == [2, 3] and "malformed CSV" in problems[0].message


def _sample(tmp_path: Path, root: Path) -> Manifest:
    rows = [
        "a.png,minor,front;side,dent,car1",
        "b.png,severe,,,car2",
        "c.png,whole,rear,glass;wheel,car1",
        "sub/e.png,minor,,,car3",
    ]
    path = _csv(tmp_path, TIDY_HEADER + ",group", *rows)
    return load_manifest(path, root, TASKS)[0]


def test_write_manifest_round_trips(tmp_path, root):
    manifest = _sample(tmp_path, root)
    out = tmp_path / "out" / "manifest.csv"
    write_manifest(manifest, out, TASKS)
    lines = out.read_text().splitlines()
    assert lines[:2] == [TIDY_HEADER + ",group", "a.png,minor,front;side,dent,car1"]
    again, problems = read_manifest(out, root, TASKS)
    assert problems == []
    assert (again.images, again.labels, again.groups) == (
        manifest.images,
        manifest.labels,
        manifest.groups,
    )


def test_write_problems(tmp_path):
    out = tmp_path / "skipped.csv"
    file = Path("l.csv")
    write_problems([Problem(file, 3, "unknown label 'x, y'"), Problem(file, None, "z")], out)
    assert out.read_text().splitlines() == [
        "file,line,message",
        "l.csv,3,\"unknown label 'x, y'\"",
        "l.csv,,z",
    ]


def test_subset_keeps_rows_aligned(tmp_path, root):
    manifest = _sample(tmp_path, root)
    part = manifest.subset(np.array([2, 0]))
    assert len(part) == 2
    assert part.images == ("c.png", "a.png") and part.lines == (4, 2)
    assert part.groups == ("car1", "car1")
    assert part.labels["damage_type"] == (("glass", "wheel"), ("dent",))
    np.testing.assert_array_equal(part.targets(TASKS[1]), manifest.targets(TASKS[1])[[2, 0]])
    assert part.paths() == [manifest.paths()[2], manifest.paths()[0]]
