"""application_config.json: one schema for main.py, predict and serve; one threshold check;
the ONNX path never imports TensorFlow, whether the engine comes as a flag or in the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cardamage.config import load_app_config, resolve_thresholds
from cardamage.console import load_predictor
from cardamage.errors import CardamageError
from cardamage.serve.settings import load_settings
from cardamage.tasks import default_tasks

TASKS = default_tasks()


def _config(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "application_config.json"
    path.write_text(json.dumps(values))
    return path


def test_thresholds_resolve_per_label_from_a_value_a_list_or_names() -> None:
    location = next(t for t in TASKS if t.name == "location")
    n = len(location.labels)
    assert resolve_thresholds({"location": 0.3}, TASKS) == {"location": (0.3,) * n}
    assert resolve_thresholds({"location": [0.2] * n}, TASKS)["location"] == (0.2,) * n
    first = location.labels[0]
    by_name = resolve_thresholds({"location": {first: 0.9}}, TASKS)["location"]
    assert by_name == (0.9, *location.thresholds[1:])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"colour": 0.3}, r"unknown task\(s\) \['colour'\]"),
        ({"location": {"roof": 0.3}}, r"unknown label\(s\) \['roof'\]"),
        ({"location": 1.5}, r"location\.value: Input should be less than or equal to 1"),
        ({"location": {"front": -0.1}}, r"location\.by_label\.front: Input should be greater"),
        ({"location": "high"}, r"location\.value: Input should be a valid number"),
        ({"location": [0.3]}, "1 given"),
    ],
)
def test_a_threshold_mistake_is_refused_by_name(overrides, message) -> None:
    with pytest.raises(CardamageError, match=message):
        resolve_thresholds(overrides, TASKS)


def test_main_py_refuses_a_misspelt_task(tmp_path: Path, tiny_model_dir: Path) -> None:
    """It was silently ignored: the threshold the user meant stayed at the model's."""
    config = _config(tmp_path, {"model": str(tiny_model_dir), "thresholds": {"locaton": 0.2}})
    with pytest.raises(CardamageError, match="locaton"):
        load_predictor(config)


def test_main_py_and_serve_read_one_file_alike(tmp_path: Path) -> None:
    values = {"model": "runs/x", "debug": True, "thresholds": {"location": 0.4}, "port": 9000,
              "serve": {"max_files": 8}, "damage_conf_threshold": 0.5}  # fmt: skip
    config = _config(tmp_path, values)
    cfg, settings = load_app_config(config), load_settings(config, {"host": "0.0.0.0"})
    assert cfg.model == settings.model == tmp_path / "runs/x"
    assert cfg.serve.port == settings.port == 9000 and settings.max_files == 8
    assert settings.host == "0.0.0.0" and cfg.thresholds == settings.thresholds
    with pytest.raises(CardamageError, match=r"serve\.prot"):
        load_app_config(_config(tmp_path, {"model": "runs/x", "serve": {"prot": 1}}))


def test_a_model_flag_replaces_the_originals_models(tmp_path: Path) -> None:
    config = _config(tmp_path, {"damage_model_fp": "d.h5", "damage_label_fp": "d.txt"})
    assert load_app_config(config).original_tasks()["severity"].model_fp == tmp_path / "d.h5"
    cfg = load_app_config(config, {"model": Path("/runs/y")})
    assert cfg.model == Path("/runs/y") and cfg.original_tasks() == {}


#: Builds the app the way `cardamage serve` does, with uvicorn's loop left out, then prints the
#: TensorFlow / Keras modules the process imported.
NO_LOOP = """
import sys
import cardamage.serve.server as server
from cardamage.cli import main
from cardamage.serve.app import create_app

def build_only(settings, predictor=None):
    create_app(settings, predictor or server.load_predictor(settings))

server.serve = build_only
assert main(sys.argv[1:]) == 0
print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))
"""

CONSOLE = """
import sys
from cardamage.console import load_predictor
_, predictor = load_predictor(sys.argv[1])
predictor.predict([sys.argv[2]])
print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))
"""


@pytest.fixture(scope="module")
def onnx_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    from cardamage.inference.export import export_model

    model = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, model)
    export_model(model, "onnx")
    return model


def _modules(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_onnx_serving_never_imports_tensorflow(onnx_model: Path, tmp_path: Path, photo) -> None:
    config = _config(tmp_path, {"model": str(onnx_model), "engine": "onnx"})
    assert _modules(NO_LOOP, "serve", "--model", str(onnx_model), "--engine", "onnx") == "[]"
    assert _modules(NO_LOOP, "serve", "--config", str(config)) == "[]"
    assert _modules(CONSOLE, str(config), str(photo)) == "[]"
    # the check can fail: the same app on the Keras engine imports TensorFlow
    assert "tensorflow" in _modules(NO_LOOP, "serve", "--model", str(onnx_model))
