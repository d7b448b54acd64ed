"""Atomic writes: a writer that fails or is killed never leaves a half file a later step reads.

Every model, cache entry and report goes through ``cardamage.io``; these tests break the writer
at each point (inside the block, at fsync, at the rename, by SIGKILL) and check that the target
still holds its previous version and that no temporary file outlives a failure it could see.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cardamage.io
from cardamage.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

OLD = b"the previous, complete version\n"

WRITERS: dict[str, tuple[Callable[[Path, Any], None], Any]] = {
    "bytes": (atomic_write_bytes, b"new" * 1000),
    "text": (atomic_write_text, "new\n" * 1000),
    "json": (atomic_write_json, {"new": list(range(1000))}),
}


class Crash(Exception):
    """The failure injected into a writer."""


def _crash(*args: object, **kwargs: object) -> None:
    raise Crash("injected")


def _only(folder: Path) -> list[str]:
    """Every entry of ``folder``: a leftover temporary file shows up here."""
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("step", ["fsync", "replace"])
@pytest.mark.parametrize("existing", [True, False], ids=["over-old", "new-file"])
def test_a_writer_failing_midway_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, step: str, existing: bool
) -> None:
    """fsync fails after the data is written (disk full); replace fails at the commit."""
    target = tmp_path / "report.json"
    if existing:
        target.write_bytes(OLD)
    monkeypatch.setattr(cardamage.io.os, step, _crash)
    write, value = WRITERS[writer]
    with pytest.raises(Crash):
        write(target, value)
    monkeypatch.undo()
    assert _only(tmp_path) == (["report.json"] if existing else [])
    if existing:
        assert target.read_bytes() == OLD


@pytest.mark.parametrize("error", [Crash, KeyboardInterrupt])
def test_atomic_path_block_raising_after_half_a_write_keeps_the_old_file(
    tmp_path: Path, error: type[BaseException]
) -> None:
    """Ctrl-C (KeyboardInterrupt, not an Exception) must clean up like any error."""
    target = tmp_path / "model.weights.h5"
    target.write_bytes(OLD)
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new")
        raise error()
    assert target.read_bytes() == OLD
    assert _only(tmp_path) == ["model.weights.h5"]


def test_atomic_path_commits_with_the_suffix_and_a_shareable_mode(tmp_path: Path) -> None:
    """Writers choose their format by suffix (".weights.h5"); mkstemp's 0600 must not stay."""
    target = tmp_path / "sub" / "model.weights.h5"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".model.weights.h5")
        tmp.write_bytes(b"new")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _only(target.parent) == ["model.weights.h5"]


#: Rewrites the target forever, each version SIZE bytes of one value, and says when it started.
LOOP = """
import sys
from cardamage.io import atomic_write_bytes
target, size = sys.argv[1], int(sys.argv[2])
print("writing", flush=True)
version = 0
while True:
    version += 1
    atomic_write_bytes(target, bytes([version % 251]) * size)
"""
SIZE = 4 * 2**20
KILLS = 6


def test_sigkill_while_writing_never_leaves_a_half_file(tmp_path: Path) -> None:
    """Killed at random moments: the target is absent or one whole version, never a mix."""
    rng = random.Random(8)
    target = tmp_path / "cache.bin"
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOP, str(target), str(SIZE)], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"writing\n"
        try:
            proc.wait(rng.uniform(0.0, 0.4))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        if target.exists():
            data = target.read_bytes()
            assert len(data) == SIZE and data.count(data[:1]) == SIZE
    assert target.exists(), "no version was ever completed: the kills came too early to test"
    # a kill skips the cleanup; what it leaves is named as a temporary, which nothing reads
    assert all(name.startswith(".tmp.") for name in _only(tmp_path) if name != target.name)


def test_model_save_failing_keeps_the_previous_model_loadable(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saving over a model directory (retraining into it) and failing half-way through Keras'
    own save must leave the model that was there, with its metadata, whole."""
    from cardamage.model.metadata import MODEL_FILE
    from cardamage.model.multitask import ModelBundle

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    bundle = ModelBundle.load(model_dir)

    def half_then_crash(path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(before[MODEL_FILE][: len(before[MODEL_FILE]) // 2])
        raise Crash("disk full")

    monkeypatch.setattr(bundle.model, "save", half_then_crash)
    bundle.info = {"note": "the new version"}
    with pytest.raises(Crash):
        bundle.save(model_dir)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before
    assert ModelBundle.load(model_dir).info == {"note": "random weights"}
