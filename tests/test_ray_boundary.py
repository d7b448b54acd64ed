"""Ray stays an optional extra: one package imports it, and its absence is one clear line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from cardamage.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "cardamage"


def test_only_the_distributed_package_imports_ray() -> None:
    importers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.add(path.relative_to(SRC).parts[0])
    assert importers <= {"distributed"}


@pytest.mark.parametrize("command", ["predict", "train"])
def test_a_missing_extra_is_named_in_one_line(
    command: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra has
    monkeypatch.setitem(sys.modules, "ray.data", None)
    out = str(tmp_path / "out")
    argv = {
        "predict": ["predict", str(tmp_path), "--model", str(tiny_model_dir), "--output", out],
        "train": ["train", "--data", str(tmp_path / "labels.csv"), "--out", out],
    }[command]
    assert main([*argv, "--ray"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == f"cardamage: error: {MISSING}"


MISSING = 'Ray is not installed: pip install "cardamage[ray]" (Ray Data, for --ray)'
