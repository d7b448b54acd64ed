"""Exports serve the same predictions as the Keras model, and ONNX serving needs no TensorFlow.

One tiny model (MobileNet 0.25 at 32 px) is exported once for the module; its batch norms are
set from a batch of images so that, unlike a plain random-weight model whose activations fade
to zero, its scores differ from image to image and a swapped or wrong output would show.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from model_support import savedmodel_scores, tflite_scores
from PIL import Image

from bench.common import normalise_batchnorm
from cardamage.errors import CardamageError
from cardamage.inference.engines import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    OnnxEngine,
    load_engine,
    physical_cores,
)
from cardamage.inference.export import export_model, int8_path, synthetic_images
from cardamage.inference.predictor import Predictor
from cardamage.model.metadata import FEATURES, MODEL_FILE, ModelSpec

SIZE = 32
SPEC = ModelSpec("mobilenet", "none", SIZE, alpha=0.25, head_units=16)


def _save_model(run_dir: Path, spec: ModelSpec = SPEC) -> Path:
    """A run directory holding a tiny model with data-dependent outputs, as training saves it."""
    import keras

    from cardamage.model.multitask import ModelBundle, build_model
    from cardamage.tasks import default_tasks

    keras.utils.set_random_seed(0)
    tasks = default_tasks()
    model = build_model(spec, tasks)
    normalise_batchnorm(model, synthetic_images(16, spec.image_size, seed=3))
    ModelBundle(model, spec, tasks, {"note": "random weights"}).save(run_dir / "model")
    return run_dir


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose model is exported to fp32 and int8 ONNX through the run path."""
    run = _save_model(tmp_path_factory.mktemp("run"))
    assert export_model(run, "onnx", int8=True) == run / "model" / ONNX_INT8_FILE
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return [_jpeg(p) for p in synthetic_images(7, 96, seed=11)]


def _scores(predictor: Predictor, sources: list, batch_size: int = 3) -> dict[str, np.ndarray]:
    predictions = predictor.predict(sources, batch_size=batch_size)
    return {
        task.name: np.stack([p.tasks[task.name].scores for p in predictions])
        for task in predictor.tasks
    }


def test_onnx_is_written_beside_the_keras_model(run_dir: Path) -> None:
    import onnx

    model_dir = run_dir / "model"
    assert {ONNX_FILE, ONNX_INT8_FILE, MODEL_FILE} <= {p.name for p in model_dir.iterdir()}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    graph = onnx.load(str(model_dir / ONNX_FILE)).graph
    assert {o.name for o in graph.output} == {"severity", "location", "damage_type", "features"}
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_onnx_and_keras_predict_the_same_for_bytes_and_paths(
    run_dir: Path, images: list[bytes], tmp_path: Path
) -> None:
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(data)
    keras_scores = _scores(Predictor.load(run_dir, engine="keras"), images)
    onnx_predictor = Predictor.load(run_dir, engine="onnx")
    for sources in (images, paths):
        onnx_scores = _scores(onnx_predictor, sources)
        for name, expected in keras_scores.items():
            # float32 noise of two engines summing ~1,500 features; a preprocessing slip is ~0.1
            np.testing.assert_allclose(onnx_scores[name], expected, atol=1e-4)
    assert keras_scores["severity"].std(axis=0).max() > 1e-3  # the images are told apart


def test_a_multiscale_model_exports_and_predicts_the_same(
    tmp_path: Path, images: list[bytes]
) -> None:
    """One network run at two sizes inside the graph: ONNX must keep both and join them alike."""
    run = _save_model(tmp_path / "run", replace(SPEC, image_size=64, scales=(1, 2)))
    export_model(run, "onnx")
    keras_scores = _scores(Predictor.load(run, engine="keras"), images)
    onnx_scores = _scores(Predictor.load(run, engine="onnx"), images)
    for name, expected in keras_scores.items():
        np.testing.assert_allclose(onnx_scores[name], expected, atol=1e-4)
    assert keras_scores["severity"].std(axis=0).max() > 1e-3  # the images are told apart


def test_int8_stays_close_to_fp32(run_dir: Path, images: list[bytes]) -> None:
    """Loose on purpose: a tiny random network amplifies rounding like no trained one does (its
    scores move by 0.1 even with 16-bit activations); bench/inference.py measures int8 on
    full-size models."""
    fp32 = _scores(Predictor.load(run_dir, engine="onnx"), images)
    int8 = _scores(Predictor.load(run_dir, engine="onnx-int8"), images)
    for name in fp32:
        assert int8[name].shape == fp32[name].shape
        assert np.abs(int8[name] - fp32[name]).mean() < 0.25
    np.testing.assert_allclose(int8["severity"].sum(axis=1), 1, atol=1e-5)  # heads stay float


def test_onnx_serving_imports_neither_tensorflow_keras_nor_scikit_learn(
    run_dir: Path, images
) -> None:
    """scikit-learn only fits (calibration, the distribution check): ~100 MB a server saves."""
    script = (
        "import sys\n"
        "import cardamage.serve.app\n"
        "from cardamage.inference.predictor import Predictor\n"
        "photo = sys.stdin.buffer.read()\n"
        "for engine in ('onnx', 'onnx-int8'):\n"
        "    Predictor.load(sys.argv[1], engine=engine).predict([photo])\n"
        "heavy = {'tensorflow', 'keras', 'sklearn'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(run_dir)],
        input=images[0],
        capture_output=True,
        check=True,
    )
    assert done.stdout.decode().strip() == "[]"


def test_batch_size_is_dynamic(run_dir: Path, images: list[bytes]) -> None:
    predictor = Predictor.load(run_dir, engine="onnx")
    one_by_one = _scores(predictor, images, batch_size=1)
    all_at_once = _scores(predictor, images, batch_size=len(images))
    for name in one_by_one:
        np.testing.assert_allclose(one_by_one[name], all_at_once[name], atol=1e-5)


@pytest.mark.slow
def test_int8_calibrates_on_the_callers_images(
    run_dir: Path, tmp_path: Path, images: list[bytes]
) -> None:
    out = tmp_path / "exports" / "cars.onnx"
    assert export_model(run_dir, "onnx", out=out, int8=True, calibration=images) == int8_path(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cars.int8.onnx", "cars.onnx"]


def test_bad_requests_are_one_line_errors(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CardamageError, match="no trained model"):
        export_model(tmp_path / "missing", "onnx")
    with pytest.raises(CardamageError, match="unknown export format 'pt'"):
        export_model(run_dir, "pt")  # type: ignore[arg-type]
    with pytest.raises(CardamageError, match="no calibration images"):
        export_model(run_dir, "onnx", int8=True, calibration=[])
    with pytest.raises(CardamageError, match="unknown engine"):
        load_engine("tensorrt", run_dir / "model")
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "model", bare, ignore=shutil.ignore_patterns("*.onnx"))
    with pytest.raises(CardamageError, match=r"missing model.int8.onnx.*--int8"):
        Predictor.load(bare, engine="onnx-int8")
    (bare / MODEL_FILE).unlink()
    with pytest.raises(CardamageError, match="no Keras model to export"):
        export_model(bare, "onnx")


def test_a_failed_export_leaves_no_file(run_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import keras

    model_dir = tmp_path / "model"
    shutil.copytree(run_dir / "model", model_dir, ignore=shutil.ignore_patterns("*.onnx"))

    def broken(*args, **kwargs):
        raise ValueError("converter exploded\nwith a long traceback")

    monkeypatch.setattr(keras.Model, "export", broken)
    with pytest.raises(CardamageError, match=r"cannot export .* to onnx: converter exploded$"):
        export_model(model_dir, "onnx")
    assert sorted(p.name for p in model_dir.iterdir()) == ["model.json", "model.keras"]


def test_an_export_of_another_model_is_refused(run_dir: Path, tmp_path: Path) -> None:
    retrained = tmp_path / "retrained"
    shutil.copytree(run_dir / "model", retrained)
    (retrained / MODEL_FILE).write_bytes(b"weights of a later training")
    with pytest.raises(CardamageError, match=r"exported from an earlier model.keras"):
        OnnxEngine.load(retrained)
    renamed = tmp_path / "renamed"
    shutil.copytree(run_dir / "model", renamed)
    meta = json.loads((renamed / "model.json").read_text())
    meta["tasks"][0]["name"] = "severity_v2"
    (renamed / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CardamageError, match=r"outputs .* but the model's tasks are"):
        OnnxEngine.load(renamed)


def test_physical_cores_counts_each_allowed_core_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hardware threads of one core count once (read from another sysfs file than the code
    reads), and only the CPUs this process may run on count."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    try:
        siblings = {
            Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text()
            for cpu in allowed
        }
    except OSError:  # no sysfs topology: every allowed CPU counts
        siblings = set(map(str, allowed))
    assert physical_cores() == len(siblings)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {allowed[0]})
    assert physical_cores() == 1


@pytest.mark.slow
def test_mixed_precision_model_exports_in_float32(tmp_path: Path, images: list[bytes]) -> None:
    import keras
    import onnx

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        run = _save_model(tmp_path / "run")
    finally:
        keras.config.set_dtype_policy(previous)
    graph = onnx.load(str(export_model(run, "onnx"))).graph
    float16 = onnx.TensorProto.FLOAT16
    assert not [t.name for t in graph.initializer if t.data_type == float16]
    assert not [n.name for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == float16]
    onnx_scores = _scores(Predictor.load(run, engine="onnx"), images)
    keras_scores = _scores(Predictor.load(run, engine="keras"), images)  # computes in float16
    for name, expected in keras_scores.items():
        np.testing.assert_allclose(onnx_scores[name], expected, atol=0.1)  # float16 rounding


@pytest.mark.slow
def test_savedmodel_loads_in_tensorflow_and_matches(run_dir: Path, images: list[bytes]) -> None:
    out = export_model(run_dir, "savedmodel")
    assert out == run_dir / "model" / "savedmodel"
    assert export_model(run_dir, "savedmodel") == out  # replaces the previous export whole
    predictor = Predictor.load(run_dir, engine="keras")
    pixels = np.stack([predictor.decode(image).pixels for image in images]).astype(np.float32)
    served = savedmodel_scores(run_dir, pixels)
    for name, expected in predictor.scores(pixels).items():
        np.testing.assert_allclose(served[name], expected, atol=1e-5)


@pytest.mark.slow
def test_tflite_runs_in_the_interpreter_and_matches(run_dir: Path, images: list[bytes]) -> None:
    """fp32 matches; int8 (TFLite quantises the heads too) is only checked to give probabilities,
    as the tiny random network amplifies rounding (see test_int8_stays_close_to_fp32)."""
    predictor = Predictor.load(run_dir, engine="keras")
    pixels = np.stack([predictor.decode(image).pixels for image in images[:1]]).astype(np.float32)
    expected = predictor.scores(pixels)
    for int8 in (False, True):
        served = tflite_scores(run_dir, pixels, int8=int8)
        for name, scores in expected.items():
            assert served[name].shape == scores.shape
            if not int8:  # features (not probabilities) are larger: TFLite's rounding shows more
                np.testing.assert_allclose(
                    served[name], scores, atol=1e-4 if name == FEATURES else 1e-5
                )
        np.testing.assert_allclose(served["severity"].sum(axis=1), 1, atol=0.05)


def test_evaluate_scores_with_the_engine_asked(run_dir: Path, tmp_path: Path) -> None:
    """`evaluate --engine onnx` scores the exported model, as a server would, without TensorFlow;
    its figures are the Keras model's."""
    from cardamage.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "heldout", n=12, size=48, seed=4)
    script = (
        "import sys\n"
        "from cardamage.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    )
    figures = {}
    for engine in ("onnx", "keras"):
        out = tmp_path / engine
        args = ["evaluate", "--model", str(run_dir), "--data", str(data), "--engine", engine]
        done = subprocess.run(
            [sys.executable, "-c", script, *args, "--out", str(out)],
            capture_output=True,
            text=True,
            check=True,
        )
        if engine == "onnx":
            assert done.stdout.strip().endswith("0 []"), done.stdout + done.stderr
        figures[engine] = json.loads((out / "evaluation.json").read_text())["tasks"]
    ranked = [task for task, metrics in figures["keras"].items() if "mAP" in metrics]
    assert ranked == ["location", "damage_type"]
    for task in ranked:  # mAP ranks scores: no threshold for a 1e-5 difference to cross
        assert figures["onnx"][task]["mAP"] == pytest.approx(figures["keras"][task]["mAP"], 1e-3)


def test_evaluate_help_says_what_each_option_takes_and_the_exit_status(capsys) -> None:
    from cardamage.cli import main

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--data DATA the labelled photos: a manifest CSV" in shown
    assert "--images IMAGES the folder the manifest's image paths are relative to" in shown
    assert "--engine ENGINE keras (default), onnx or onnx-int8" in shown
    assert "exit status: 0 every photo of --data was scored 2 nothing was scored" in shown
