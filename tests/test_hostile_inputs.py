"""Hostile inputs at the command line: `cardamage predict`, `cardamage train` and main.py.

Every class of bad input gets one line naming the culprit, no traceback, and a non-zero exit
where nothing could be done; the good files beside it are still processed. Odd but valid images
(misnamed, CMYK, 16-bit, palette, animated, broken EXIF) must simply work. The decoder's own
cases are in test_images.py and the manifest's in test_manifest.py; this is the user's view.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest_serve import encoded, noise_image
from PIL import Image

from cardamage.cli import main
from cardamage.cli.inference import SOME_UNREADABLE
from cardamage.inference.explain import CAPTION_BAND
from cardamage.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
TASK_NAMES = {"severity", "location", "damage_type"}
TRAIN_ARGS = [
    "--weights", "none", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", "32",
    "--folds", "2", "--epochs", "1", "--views", "1",
]  # fmt: skip


def _one_bit_png(width: int, height: int) -> bytes:
    """A blank 1-bit PNG: a few KB on disk, whatever size it declares."""
    return encoded(Image.new("1", (width, height)), "PNG")


def _truncated() -> bytes:
    jpeg = encoded(noise_image(96, 72))
    return jpeg[: len(jpeg) * 6 // 10]  # cut mid-scan: the header is intact


def _rotated_png() -> bytes:
    """The upright photo stored sideways with EXIF orientation 6 (display rotated 90° CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(UPRIGHT.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif)


def _sixteen_bit_png() -> bytes:
    ramp = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16
    return encoded(Image.fromarray(ramp), "PNG")


def _animated_gif() -> bytes:
    frames = [noise_image(seed=s).convert("P") for s in range(3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def _palette_png() -> bytes:
    return encoded(noise_image().convert("P"), "PNG", transparency=0)


UPRIGHT = noise_image(96, 72, seed=7)  # big enough to be answered (and mapped)

#: kind -> (file name, content, words the one-line message must hold besides the file's name)
BAD: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "zero-byte": ("empty.jpg", lambda: b"", "empty file (0 bytes)"),
    "truncated": ("cut.jpg", _truncated, "truncated"),
    "not-an-image": ("notes.jpg", lambda: b"%PDF-1.4 not a photo\n", "not an image"),
    "decompression-bomb": ("bomb.png", lambda: _one_bit_png(20_000, 10_000), "decompression"),
    "huge-dimensions": ("huge.png", lambda: _one_bit_png(8_000, 7_000), "exceeds the limit"),
}
#: kind -> (file name, content): unusual but valid, so each must get a prediction
GOOD: dict[str, tuple[str, Callable[[], bytes]]] = {
    "png-named-jpg": ("really_a_png.jpg", lambda: encoded(noise_image(), "PNG")),
    "jpeg-without-extension": ("photo", lambda: encoded(noise_image())),
    "cmyk-jpeg": ("cmyk.jpg", lambda: encoded(noise_image().convert("CMYK"))),
    "16-bit-png": ("deep.png", _sixteen_bit_png),
    "palette-png": ("palette.png", _palette_png),
    "animated-gif": ("anim.gif", _animated_gif),
    "broken-exif": ("exif.jpg", lambda: encoded(noise_image(), exif=b"Exif\x00\x00garbage!")),
    "exif-rotated": ("rotated.png", _rotated_png),
}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every file above on disk, by file name."""
    folder = tmp_path_factory.mktemp("hostile")
    made = {name: make for name, make, *_ in [*BAD.values(), *GOOD.values()]}
    for name, make in made.items():
        (folder / name).write_bytes(make())
    return {name: folder / name for name in made}


def _cli(*args: str) -> Run:
    """`cardamage ...` in this process (fast: TensorFlow is imported once)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def predicted(photos: dict[str, Path], tiny_model_dir: Path) -> tuple[Run, dict[str, dict]]:
    """One `cardamage predict` over all files, good and bad mixed: the run and each record."""
    run = _cli("predict", *map(str, photos.values()), "--model", str(tiny_model_dir),
               "--format", "jsonl")  # fmt: skip
    records = [json.loads(line) for line in run.stdout.splitlines()]
    return run, {Path(r["image"]).name: r for r in records}


@pytest.fixture(scope="module")
def console(
    photos: dict[str, Path], tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Run, dict[str, str]]:
    """main.py (the original application) over all files: the run and each file's line."""
    config = tmp_path_factory.mktemp("console") / "application_config.json"
    config.write_text(json.dumps({"model": str(tiny_model_dir)}))
    paths = list(map(str, photos.values()))
    done = _main_py(config, *paths)
    # an answer a person should check gets one more line after the original's dict
    lines = [line for line in done.stdout.splitlines() if not line.startswith("needs review: ")]
    assert len(lines) == len(paths), done.stdout
    return done, {Path(p).name: line for p, line in zip(paths, lines, strict=True)}


def _main_py(config: Path, *args: str) -> Run:
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config", str(config), "--debug", "False", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def _one_line(message: str, *words: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_file_is_named_in_one_line(kind: str, predicted, console) -> None:
    name, _, reason = BAD[kind]
    records = predicted[1]
    assert records[name]["prediction"] is None
    _one_line(records[name]["error"], name, reason)
    line = console[1][name]
    assert line.startswith("error: ")
    _one_line(line, name, reason)


def test_bad_files_are_counted_and_the_others_predicted(predicted, console) -> None:
    """Both runs mix every bad file with the good ones: a bad file costs only itself."""
    run, _ = predicted
    assert run.code == SOME_UNREADABLE  # the others were predicted
    assert f"predicted {len(GOOD)} image(s), {len(BAD)} could not be read" in run.stderr
    console_run, _ = console
    assert console_run.code == 1  # main.py: a path argument failed
    assert "Traceback" not in run.stderr + console_run.stderr


def test_only_bad_files_is_a_non_zero_exit(photos: dict[str, Path], tiny_model_dir: Path) -> None:
    bad = [str(photos[name]) for name, *_ in BAD.values()]
    run = _cli("predict", *bad, "--model", str(tiny_model_dir), "--format", "csv")
    assert run.code == 1
    rows = list(csv.DictReader(run.stdout.splitlines()))
    assert [Path(r["image"]).name for r in rows] == [name for name, *_ in BAD.values()]
    assert all(r["error"] for r in rows)


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_odd_but_valid_image_gets_a_prediction(kind: str, predicted, console) -> None:
    """Read, not refused: answered, or declined as a photo (too blank, too small) with why."""
    name = GOOD[kind][0]
    _, records = predicted
    assert records[name]["error"] is None
    if records[name]["trust"]["abstain"]:
        assert records[name]["prediction"] is None and records[name]["trust"]["reason"]
        assert console[1][name] == f"not assessed: {records[name]['trust']['reason']}"
    else:
        assert set(records[name]["prediction"]) == TASK_NAMES
        assert console[1][name].startswith("{'damage': [(")


def test_exif_orientation_is_applied_before_the_model(
    photos: dict[str, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The heatmap overlay is drawn on the photo the model saw: upright, not as stored.

    (The random-weight model scores every photo alike, so the scores cannot tell.)
    """
    rotated = photos["rotated.png"]
    assert Image.open(rotated).size == UPRIGHT.size[::-1]
    run = _cli("predict", str(rotated), "--model", str(tiny_model_dir),
               "--output", str(tmp_path / "out.csv"), "--explain", str(tmp_path))  # fmt: skip
    assert run.code == 0, run.stderr
    width, height = Image.open(tmp_path / "rotated_severity.png").size  # photo over its caption
    assert height == UPRIGHT.size[1] + CAPTION_BAND and width >= UPRIGHT.size[0]


# --- training: manifest rows that point outside the image root, or at hostile files ---------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    """A small synthetic set, the bad files in its image root, and a valid photo outside the
    root with a symlink to it from inside."""
    folder = tmp_path_factory.mktemp("train")
    manifest = generate_dataset(folder / "data", n=24, size=48)
    (folder / "outside.png").write_bytes(encoded(UPRIGHT, "PNG"))
    (manifest.parent / "link.png").symlink_to(folder / "outside.png")
    for name, *_ in BAD.values():
        (manifest.parent / name).write_bytes(photos[name].read_bytes())
    return manifest


#: kind -> (the image cell, words its one-line problem must hold)
ROWS = {
    "relative-escape": ("../outside.png", "outside the image root"),
    "absolute-escape": ("{outside}", "outside the image root"),
    "symlink-outside": ("link.png", "outside the image root"),
    "zero-byte": ("empty.jpg", "empty file"),
    "not-an-image": ("notes.jpg", "not an image"),
    "decompression-bomb": ("bomb.png", "decompression bomb"),
    "huge-dimensions": ("huge.png", "exceeds the limit"),
}


def _with_rows(dataset: Path, cells: list[str], out: Path) -> dict[int, str]:
    """Write the manifest plus one row per image cell (labels copied): {line: cell as written}."""
    lines = dataset.read_text().splitlines()
    labels = lines[1].split(",", 1)[1]
    written = [cell.format(outside=dataset.parent.parent / "outside.png") for cell in cells]
    out.write_text("\n".join([*lines, *(f"{cell},{labels}" for cell in written)]) + "\n")
    return dict(enumerate(written, start=len(lines) + 1))


def _train(manifest: Path, dataset: Path, tmp_path: Path, *extra: str) -> Run:
    return _cli("train", "--data", str(manifest), "--images", str(dataset.parent),
                "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"),
                *TRAIN_ARGS, *extra)  # fmt: skip


@pytest.mark.parametrize("kind", sorted(ROWS))
def test_train_refuses_a_hostile_row_naming_it(kind: str, dataset: Path, tmp_path: Path) -> None:
    cell, reason = ROWS[kind]
    manifest = tmp_path / "labels.csv"
    ((line, written),) = _with_rows(dataset, [cell], manifest).items()
    run = _train(manifest, dataset, tmp_path)
    assert run.code == 2 and "Traceback" not in run.stderr
    problem = next(x for x in run.stderr.splitlines() if f"{manifest}:{line}:" in x)
    _one_line(problem, f"'{written}'", reason)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_skip_bad_trains_on_the_other_rows(dataset: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "labels.csv"
    lines = _with_rows(dataset, [cell for cell, _ in ROWS.values()], manifest)
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"final_model": "best_fold"}))  # no refit: a third faster
    run = _train(manifest, dataset, tmp_path, "--skip-bad", "--config", str(config))
    assert run.code == 0, run.stderr
    skipped = list(csv.DictReader((tmp_path / "run" / "skipped.csv").open()))
    assert [int(row["line"]) for row in skipped] == list(lines)
    assert (tmp_path / "run" / "model" / "model.keras").exists()


def test_train_refuses_a_truncated_jpeg_naming_its_row(dataset: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "labels.csv"
    ((line, _),) = _with_rows(dataset, ["cut.jpg"], manifest).items()
    run = _train(manifest, dataset, tmp_path)
    assert run.code == 2
    problem = next(x for x in run.stderr.splitlines() if f"{manifest}:{line}:" in x)
    _one_line(problem, "'cut.jpg'", "truncated")
    assert not (tmp_path / "run").exists()


# --- configs: wrong types and unknown keys -----------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"heads": {"epochs": "many"}}, "heads.epochs"),
        ({"data": {"folds": 2.5}}, "data.folds"),
        ({"colour": "red"}, "colour"),
        ({"heads": {"colour": "red"}}, "heads.colour"),
        ({"data": {"augment": {"flip": "sideways"}}}, "data.augment.flip"),
        ({"data": {"tasks": [{"name": "severity", "kind": "ranking"}]}}, "data.tasks.0.kind"),
        ({"epochs": "many"}, "heads.epochs"),  # a flat file's key, named where it lives now
    ],
)
def test_train_config_mistake_is_one_line_naming_the_field(
    values: dict, field: str, dataset: Path, tmp_path: Path
) -> None:
    config = tmp_path / "train.json"
    config.write_text(json.dumps(values))
    run = _cli("train", "--config", str(config), "--data", str(dataset), "--out", str(tmp_path))
    assert run.code == 2
    _one_line(run.stderr, f"{config}: {field}:")


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"debug": "perhaps"}, "debug"),
        ({"thresholds": {"severity": "high"}}, "thresholds.severity"),
        ({"model": 7}, "model"),
    ],
)
def test_console_config_mistake_is_one_line_naming_the_field(
    values: dict, field: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "application_config.json"
    config.write_text(json.dumps({"model": str(tiny_model_dir), **values}))
    run = _main_py(config)
    assert run.code == 2 and run.stdout == ""
    _one_line(run.stderr, f"{config}: {field}")


def test_serve_config_mistake_is_one_line_naming_the_field(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Refused before a port is bound: `serve` never starts with a limit it did not understand."""
    config = tmp_path / "application_config.json"
    config.write_text(json.dumps({"model": str(tiny_model_dir), "serve": {"max_files": "lots"}}))
    run = _cli("serve", "--config", str(config))
    assert run.code == 2
    _one_line(run.stderr, f"{config}: serve.max_files:")
