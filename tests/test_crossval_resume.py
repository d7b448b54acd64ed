"""Interrupted training: a killed run resumes from its last finished fold."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from model_support import assert_fold_models_score_as_cached
from process_support import interruptible

from cardamage.synthetic import generate_dataset

ARGS = [
    "--backbone", "mobilenet", "--alpha", "0.25", "--weights", "none", "--image-size", "32",
    "--folds", "3", "--epochs", "3", "--views", "1",
]  # fmt: skip


def train(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cardamage", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), n=36, size=48, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_killed_run_resumes_from_last_finished_fold(data: Path, tmp_path: Path, sig) -> None:
    _kill_and_resume(data, tmp_path / "run", sig, ARGS)


@pytest.mark.slow
@pytest.mark.parametrize("layers", ["-1", "30"], ids=["every-layer", "top-on-cached-views"])
def test_killed_fine_tuning_resumes_and_each_fold_tunes_its_own(
    data: Path, tmp_path: Path, layers: str
) -> None:
    fine_tuning = [*ARGS, "--fine-tune-layers", layers, "--fine-tune-epochs", "1"]
    run = tmp_path / "run"
    _kill_and_resume(data, run, signal.SIGKILL, fine_tuning)
    first, second = (_backbone(run / "folds" / f"fold_{k}" / "model") for k in (1, 2))
    differ = [not np.array_equal(a, b) for a, b in zip(first, second, strict=True)]
    # tuned layers differ; the frozen ones below (the cached views' layers) are the same
    assert all(differ) if layers == "-1" else differ[-1] and not differ[0]
    # out of fold: each fold's own model (a random backbone scores every photo alike here; that
    # the folds' backbones differ is asserted above)
    assert_fold_models_score_as_cached(run, data.parent, told_apart=False)


def _backbone(model_dir: Path) -> list[np.ndarray]:
    from cardamage.model.multitask import ModelBundle

    weights = ModelBundle.load(model_dir).model.branch_backbones[0].get_weights()
    return [w for w in weights if w.ndim == 4]  # the convolutions' kernels


def _kill_and_resume(data: Path, run: Path, sig, args: list[str]) -> None:
    cache = str(run.parent / "c")
    proc = train("--data", str(data), "--out", str(run), "--cache-dir", cache, *args)
    first = run / "folds" / "fold_1" / "metrics.json"
    wait_for(first, proc, timeout=900)  # a guard against hangs; busy machines are slow
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not (run / "summary.json").exists(), err[-2000:]
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    stamp = first.stat().st_mtime_ns

    resumed = train("--resume", str(run))
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    assert "fold 1/3: finished before, kept" in out
    assert first.stat().st_mtime_ns == stamp  # the finished fold was not retrained
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 3 and len(summary["tasks"]["severity"]["per_fold"]) == 3
    for k in (1, 2, 3):
        assert (run / "folds" / f"fold_{k}" / "model" / "model.keras").exists()
    assert (run / "model" / "model.json").exists()
    assert not list(run.rglob(".tmp.*")), "no temporary file left behind"


def test_resume_refuses_other_options_and_non_runs(tmp_path: Path, capsys) -> None:
    from cardamage.cli import main

    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "drop ['epochs']" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
