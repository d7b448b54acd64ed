"""main.py, the original application: through a pipe, a pseudo-terminal, and original configs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from process_support import interruptible

from cardamage.console import parse_bool
from cardamage.inference.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]


def run_main(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def result_lines(stdout: str) -> list[dict]:
    return [ast.literal_eval(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    path = tmp_path / "application_config.json"
    path.write_text(json.dumps({"model": str(tiny_model_dir), "debug": True}))
    return path


def test_debug_false_means_false() -> None:
    assert parse_bool("False") is False and parse_bool("false") is False
    assert parse_bool("True") is True


def test_pipe_prints_original_dicts_and_survives_bad_paths(
    config: Path, photo: Path, tiny_model_dir: Path
) -> None:
    corrupt = photo.parent / "corrupt.jpg"
    corrupt.write_bytes(photo.read_bytes()[:200])
    stdin = f"{photo}\n/no/such/file.jpg\n{corrupt}\n{photo}\n"
    done = run_main(config, "--debug", "False", stdin=stdin)
    assert done.returncode == 0, done.stderr
    results = result_lines(done.stdout)
    assert len(results) == 2 and results[0] == results[1]
    assert set(results[0]) == {"damage", "location", "damagetype"}
    assert len(results[0]["damage"]) == 1  # a severity always comes out
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "/no/such/file.jpg" in errors[0] and "corrupt.jpg" in errors[1]
    assert "debug:" not in done.stderr  # --debug False overrides the config's true
    expected = Predictor.load(tiny_model_dir).predict([photo])[0].tasks["severity"].labels[0]
    assert results[0]["damage"][0] == (expected[0], round(expected[1], 2))


def test_paths_as_arguments_and_debug_on(config: Path, photo: Path) -> None:
    done = run_main(config, "--debug", "True", str(photo))
    assert done.returncode == 0
    assert len(result_lines(done.stdout)) == 1
    assert "debug:" in done.stderr
    assert run_main(config, "/no/such.jpg").returncode == 1


def test_dragged_and_home_relative_paths(config: Path, photo: Path, monkeypatch) -> None:
    """A file dragged into a terminal arrives quoted; `~` is the home folder, as in a shell."""
    spaced = photo.parent / "my car.jpg"
    spaced.write_bytes(photo.read_bytes())
    monkeypatch.setenv("HOME", str(photo.parent))
    stdin = f"'{spaced}'\n\"{spaced}\"\n~/{photo.name}\n"
    done = run_main(config, "--debug", "False", stdin=stdin)
    assert "error" not in done.stdout, done.stdout
    assert len(result_lines(done.stdout)) == 3


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"model": "x", "colour": "red"}')
    done = run_main(path)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "colour" in done.stderr


def test_interactive_prompt_and_ctrl_c(config: Path, photo: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(
        sys.executable,
        [str(ROOT / "main.py"), "--config", str(config), "--debug", "False"],
        timeout=120,
        encoding="utf-8",
        preexec_fn=interruptible,
    )
    child.expect_exact("Image filepath: ")
    child.sendline(str(photo))
    child.expect(r"\{'damage': \[\('\w+', [0-9.]+\)\]")
    child.expect_exact("Image filepath: ")
    child.sendline("/missing.jpg")
    child.expect("error: .*missing.jpg")
    child.expect_exact("Image filepath: ")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def _three_original_models(tmp_path: Path, savedmodel: bool) -> Path:
    """Per-task models as the original trained them (each its own backbone, /255 input)."""
    import keras

    keys = {}
    for prefix, labels in (
        ("damage", ["minor", "moderate", "severe", "whole"]),
        ("location", ["NULL", "front", "rear", "side"]),
        ("damagetype", ["NULL", "dent", "glass", "paint", "wheel"]),
    ):
        # a keras.applications network, as the original's, not one of cardamage's classes
        backbone = keras.applications.MobileNet(
            include_top=False, weights=None, input_shape=(160, 160, 3), alpha=0.25, pooling="avg"
        )
        activation = "softmax" if prefix == "damage" else "sigmoid"
        model = keras.Sequential([backbone, keras.layers.Dense(len(labels), activation=activation)])
        model.build((None, 160, 160, 3))
        path = tmp_path / (prefix if savedmodel else f"{prefix}.keras")
        if savedmodel:
            model.export(str(path), format="tf_saved_model", verbose=False)
        else:
            model.save(path)
        (tmp_path / f"{prefix}.txt").write_text("\n".join(labels) + "\n")
        keys |= {
            f"{prefix}_model_fp": path.name,
            f"{prefix}_label_fp": f"{prefix}.txt",
            f"{prefix}_conf_threshold": 0.0,
        }
    config = tmp_path / "application_config.json"
    config.write_text(json.dumps(keys | {"debug": False}))
    return config


@pytest.mark.slow
@pytest.mark.parametrize("savedmodel", [False, True], ids=["keras", "savedmodel"])
def test_original_three_model_config(tmp_path: Path, photo: Path, savedmodel: bool) -> None:
    config = _three_original_models(tmp_path, savedmodel)
    done = run_main(config, "--debug", "False", str(photo))
    assert done.returncode == 0, done.stderr
    (result,) = result_lines(done.stdout)
    # threshold 0: every label passes; the NULL placeholder is never printed
    assert [label for label, _ in result["location"]] == ["front", "rear", "side"]
    assert [label for label, _ in result["damagetype"]] == ["dent", "glass", "paint", "wheel"]
    assert len(result["damage"]) == 1
    assert all(0 <= score <= 1 for _, score in result["location"])
    assert np.isfinite([s for _, s in result["damagetype"]]).all()
