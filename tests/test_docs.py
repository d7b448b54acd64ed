"""The documentation site builds strict and offline, and its generated reference is complete."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cardamage.cli import build_parser
from cardamage.config import ServeConfig, train_fields

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict` (a warning, e.g. a broken link or anchor, fails it) of this tree."""
    out = tmp_path_factory.mktemp("site")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "NO_MKDOCS_2_WARNING": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def _commands(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [f"{prog} {name}", *_commands(sub, f"{prog} {name}")]
    return found


def test_the_cli_page_documents_every_command_and_flag(site: Path) -> None:
    page = (site / "reference" / "cli" / "index.html").read_text()
    commands = _commands(build_parser(), "cardamage")
    assert {"cardamage train", "cardamage data import", "cardamage index build"} <= set(commands)
    assert [c for c in commands if f"<code>{c}</code>" not in page] == []
    assert "--fine-tune-learning-rate" in page and "python main.py" in page


def test_the_configuration_page_documents_every_key(site: Path) -> None:
    page = (site / "reference" / "configuration" / "index.html").read_text()
    keys = [f"{section}.{name}" for section, name, _ in train_fields()]
    keys += [f"serve.{name}" for name in ServeConfig.model_fields]
    assert "fine_tune.learning_rate" in keys
    assert [k for k in keys if f"<code>{k}</code>" not in page] == []


def test_the_openapi_document_is_the_apps(site: Path) -> None:
    document = json.loads((site / "reference" / "openapi.json").read_text())
    assert {"/v1/predict", "/v1/claims", "/v1/model"} <= set(document["paths"])
    assert "X-API-Key" in json.dumps(document["components"]["securitySchemes"])


def test_generated_pages_are_not_committed() -> None:
    """The reference pages in the tree are stubs the hook fills at build time."""
    for name, marker in (("cli", "cli"), ("configuration", "config")):
        stub = (ROOT / "docs" / "reference" / f"{name}.md").read_text()
        assert f"<!-- generated: {marker} -->" in stub and "| ---" not in stub
