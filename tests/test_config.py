"""The train config: sections, flat files of before sections, merged files, schema flags."""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from cardamage.cli import build_parser
from cardamage.cli.training import _flag_options, train_overrides
from cardamage.config import (
    FLAT_KEYS,
    ModelConfig,
    TrainConfig,
    flat_name,
    load_train_config,
    read_tasks,
    train_fields,
)
from cardamage.console import build_parser as console_parser
from cardamage.errors import CardamageError
from cardamage.model.metadata import META_FILE, ModelMeta, ModelSpec
from cardamage.tasks import default_tasks
from cardamage.train.folds import model_spec

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"data": "labels.csv", "out": "run"}


def _write(path: Path, values: dict) -> Path:
    path.write_text(json.dumps(values))
    return path


def test_a_flat_file_loads_as_its_nested_form_with_a_one_line_notice(tmp_path, caplog) -> None:
    flat = {"data": "labels.csv", "out": "run", "epochs": 7, "tune_top": True,
            "fine_tune_layers": 3, "augment": {"zoom": 0.2}}  # fmt: skip
    nested = {
        "data": {"data": "labels.csv", "augment": {"zoom": 0.2}},
        "heads": {"epochs": 7},
        "tune_top": {"enabled": True},
        "fine_tune": {"layers": 3},
        "run": {"out": "run"},
    }
    with caplog.at_level(logging.WARNING):
        old = load_train_config(_write(tmp_path / "flat.json", flat))
    (notice,) = caplog.messages
    assert "flat.json" in notice and "epochs -> heads.epochs" in notice and "\n" not in notice
    caplog.clear()
    assert old == load_train_config(_write(tmp_path / "nested.json", nested))
    assert not caplog.messages  # the nested form is read quietly
    assert old.heads.epochs == 7 and old.tune_top.enabled and old.fine_tune.layers == 3


def test_config_files_merge_in_order_section_by_section(tmp_path) -> None:
    first = _write(
        tmp_path / "a.json",
        {"model": {"image_size": 96, "head_units": 8}, "data": {"augment": {"zoom": 0.2}}},
    )
    second = _write(
        tmp_path / "b.json", {"model": {"image_size": 64}, "data": {"augment": {"flip": False}}}
    )
    cfg = load_train_config([first, second], {**REQUIRED, "epochs": 3, "head_units": None})
    assert cfg.model.image_size == 64 and cfg.model.head_units == 8  # later keys win, others stay
    assert cfg.data.augment.zoom == 0.2 and not cfg.data.augment.flip
    assert cfg.heads.epochs == 3  # flags over both; None is 'not given'
    # what a run's config.json records reads back as the same config, defaults resolved
    recorded = _write(tmp_path / "config.json", cfg.model_dump(mode="json"))
    assert load_train_config(recorded) == cfg


def test_the_presets_are_nested_and_load_quietly(tmp_path, caplog) -> None:
    for preset in sorted((ROOT / "configs").glob("*.json")):
        with caplog.at_level(logging.WARNING):
            load_train_config(preset, REQUIRED)
        assert set(json.loads(preset.read_text())) <= set(TrainConfig.model_fields)
    assert not caplog.messages


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"heads": {"epoch": 3}}, "heads.epoch: Extra inputs"),
        ({"colour": 1}, "colour: Extra inputs"),
        ({"fine_tune": {"layers": -2}}, "fine_tune.layers"),
        ({"fine_tune": {"learning_rate": 0}}, "fine_tune.learning_rate"),
        ({"fine_tune": {"warmup_epochs": 0}}, "fine_tune.warmup_epochs"),
        ({"fine_tune": {"label_smoothing": 0.7}}, "fine_tune.label_smoothing"),
        ({"fine_tune": {"schedule": "linear"}}, "fine_tune.schedule"),
        ({"fine_tune": {"batchnorm": "off"}}, "fine_tune.batchnorm"),
        ({"fine_tune": {"crop": -0.1}}, "fine_tune.crop"),
        ({}, "data.data: Field required"),
    ],
)
def test_mistakes_name_the_field_in_its_section(tmp_path, values, message) -> None:
    path = _write(tmp_path / "train.json", {"run": {"out": "run"}, **values})
    with pytest.raises(CardamageError, match=re.escape(f"{path}: {message}")):
        load_train_config(path, {"data": None})


def test_the_model_section_is_the_spec_and_owns_its_defaults() -> None:
    # but the ensemble's shape, which run.final_model decides ("fold_ensemble")
    ensemble = {"ensemble", "ensemble_backbones"}
    assert {f.name for f in fields(ModelSpec)} - ensemble == set(ModelConfig.model_fields)
    cfg = load_train_config(None, REQUIRED)
    assert model_spec(cfg) == ModelSpec("mobilenetv2", "imagenet", 224)
    assert model_spec(cfg).mid_level is True


def test_a_model_json_from_before_mid_level_reads_as_without_it(tmp_path) -> None:
    ModelMeta(ModelSpec("mobilenet", "none", 32), default_tasks(), {}).write(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert asdict(ModelMeta.read(tmp_path).spec)["mid_level"] is True
    del meta["spec"]["mid_level"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    assert ModelMeta.read(tmp_path).spec.mid_level is False


def _train_options() -> dict[str, object]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {o: a for a in sub.choices["train"]._actions for o in a.option_strings}


def test_every_scalar_option_is_a_train_flag_with_its_help() -> None:
    options = _train_options()
    for section, name, field in train_fields():
        flag = "--" + flat_name(section, name).replace("_", "-")
        if _flag_options(field) is None:
            assert flag not in options
            continue
        assert options[flag].dest in FLAT_KEYS and options[flag].help.startswith(field.description)
    args = build_parser().parse_args(
        ["train", "--fine-tune-learning-rate", "3e-4", "--no-class-weights", "--scales", "1", "2"]
    )
    cfg = load_train_config(None, {**train_overrides(args), **REQUIRED, "image_size": 64})
    assert cfg.fine_tune.learning_rate == 3e-4 and not cfg.heads.class_weights
    assert cfg.model.scales == (1, 2)


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """A parser and every subcommand's under it (`cardamage data import`, `index build`)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_flag_the_readme_names_exists() -> None:
    """The README and every page of the documentation site name only flags that exist."""
    known = {
        o
        for root in (build_parser(), console_parser())
        for p in _parsers(root)
        for a in p._actions
        for o in a.option_strings
    }
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    assert len(pages) > 20  # the site's pages are found
    for page in pages:
        text = page.read_text()
        text = re.sub(r"^ray .*$", "", text, flags=re.M)  # Ray's own command names its flags
        text = re.sub(r"^.*\bbench[/.].*$", "", text, flags=re.M)  # benchmarks have their own
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
        assert named - known == set(), page.relative_to(ROOT)


def test_data_commands_read_the_tasks_of_either_form(tmp_path) -> None:
    tasks = [{"name": "severity", "kind": "multiclass"}]
    nested = _write(tmp_path / "nested.json", {"data": {"tasks": tasks}})
    flat = _write(tmp_path / "flat.json", {"tasks": tasks})
    assert (
        [t.name for t in read_tasks(nested)] == [t.name for t in read_tasks(flat)] == ["severity"]
    )
