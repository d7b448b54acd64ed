"""`predict --ray` and `train --ray` on a local Ray started by the tests (2 CPUs).

The rows are `cardamage predict`'s, the cached features the single process's; an actor killed
mid-run costs nothing but time, and a bad photo is an error row.
"""

from __future__ import annotations

import csv
import faulthandler
import io
import json
import logging
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.common import normalise_batchnorm

pytest.importorskip("ray.data", reason='needs the Ray extra: pip install "cardamage[ray]"')

import pyarrow.dataset as pads

from cardamage.cli import main
from cardamage.config import AugmentConfig
from cardamage.distributed import predict
from cardamage.distributed.predict import RayOptions, predict_on_ray
from cardamage.inference.engines import OnnxEngine
from cardamage.inference.export import export_model
from cardamage.inference.predictor import Predictor
from cardamage.model.metadata import ModelMeta, ModelSpec
from cardamage.train.features import FeatureRequest, cached_features

PHOTOS = 24


#: A test that has not finished by then is stuck (a lost worker never replaced, say): its
#: threads' stacks are printed and the run stops rather than hanging CI.
STUCK_S = 900


@pytest.fixture(autouse=True)
def _not_stuck():
    faulthandler.dump_traceback_later(STUCK_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray kills workers when the machine's memory runs low, whoever fills it; on a shared
    # machine that is other jobs, and these tiny workers would be restarted and killed forever
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model of conftest, exported to ONNX in a copy of its own."""
    run = tmp_path_factory.mktemp("onnx_run")
    shutil.copytree(tiny_model_dir, run / "model")
    export_model(run, "onnx")
    return run


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PHOTOS small JPEGs in a folder and a sub-folder, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(PHOTOS):
        name = f"sub/{i:02d}.jpg" if i % 4 == 0 else f"{i:02d}.jpg"
        Image.fromarray(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return folder


def _rows(out: Path, fmt: str = "parquet") -> list[dict]:
    reader = {"parquet": "parquet", "csv": "csv", "jsonl": "json"}[fmt]
    return pads.dataset(out, format=reader).to_table().to_pylist()


def _local_csv(run: Path, sources: list[str], tmp_path: Path) -> dict[str, dict]:
    out = tmp_path / "local.csv"
    main(["predict", *sources, "--model", str(run), "--engine", "onnx", "--output", str(out)])
    return {r["image"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}


def test_rows_are_cardamage_predicts_with_error_rows(
    ray_local, onnx_run: Path, photos: Path, tmp_path: Path, capsys
) -> None:
    missing = str(photos / "missing.jpg")
    out = tmp_path / "out"
    sources = [str(photos), missing, "--recursive"]
    code = main(["predict", *sources, "--model", str(onnx_run), "--ray", "--output", str(out)])
    assert code == 1  # some files could not be read, as `cardamage predict` says
    assert f"predicted {PHOTOS} image(s), 2 could not be read" in capsys.readouterr().err
    rows = {r["image"]: r for r in _rows(out)}
    local = _local_csv(onnx_run, sources, tmp_path)
    assert set(rows) == set(local) and len(rows) == PHOTOS + 2
    assert list(_rows(out)[0]) == list(next(iter(local.values())))  # the same columns
    for image, row in rows.items():
        mine = local[image]
        assert bool(row["error"]) == bool(mine["error"])
        if row["error"]:
            assert row["error"] == mine["error"]  # the same words for the same problem
            continue
        for column, value in row.items():
            if isinstance(value, float):
                assert value == pytest.approx(float(mine[column]), abs=1e-4)
            elif column != "error":  # a missing value: null in Ray's files, empty in csv
                assert ("" if value is None else value) == mine[column]
    scores = np.array([r["severity:minor"] for r in rows.values() if not r["error"]])
    assert scores.std() > 1e-4  # photos told apart: a swapped or missing row would show


def test_manifest_and_list_sources_and_other_formats(
    ray_local, onnx_run: Path, photos: Path, tmp_path: Path
) -> None:
    manifest = photos / "labels.csv"
    manifest.write_text("image,severity\n01.jpg,minor\nsub/04.jpg,whole\nbroken.jpg,minor\n")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{photos / '02.jpg'}\n\n{photos / '03.jpg'}\n")
    names = ("01.jpg", "sub/04.jpg", "broken.jpg", "02.jpg", "03.jpg")
    expected = {str(photos / name) for name in names}
    for fmt in ("csv", "jsonl"):
        out = tmp_path / fmt
        argv = ["predict", str(manifest), str(listing), "--model", str(onnx_run), "--ray"]
        assert main([*argv, "--format", fmt, "--output", str(out)]) == 1
        rows = _rows(out, fmt)
        assert {r["image"] for r in rows} == expected and len(rows) == len(expected)
        assert [bool(r["error"]) for r in rows].count(True) == 1


def test_an_actor_killed_mid_run_is_retried_and_every_photo_written_once(
    ray_local, onnx_run: Path, photos: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "killed-once"

    class DiesOnce(OnnxEngine):
        """Its process is killed (SIGKILL) in the middle of its first batch: a lost worker."""

        def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(pixels)

    model = onnx_run / "model"
    predictor = Predictor(ModelMeta.read(model), DiesOnce.load(model), model_dir=model)
    options = RayOptions(actors=1, batch_size=4)
    done = predict_on_ray(predictor, [str(photos)], True, str(tmp_path / "out"), "parquet", options)
    assert marker.exists()  # the actor did die
    images = [r["image"] for r in _rows(tmp_path / "out")]
    assert sorted(images) == sorted(set(images)) and len(images) == PHOTOS + 1  # once each
    assert (done.predicted, done.failed) == (PHOTOS, 1)


def test_rows_come_in_files_of_rows_per_file_not_one_per_block(
    ray_local, onnx_run: Path, photos: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(predict, "PHOTOS_PER_BLOCK", 3)  # 9 blocks of input,
    monkeypatch.setattr(predict, "ROWS_PER_FILE", 10)  # at most 3 files of output
    model = onnx_run / "model"
    predictor = Predictor(ModelMeta.read(model), OnnxEngine.load(model), model_dir=model)
    options = RayOptions(actors=1, batch_size=3)
    predict_on_ray(predictor, [str(photos)], True, str(tmp_path / "out"), "parquet", options)
    sizes = sorted(pads.dataset(f).count_rows() for f in (tmp_path / "out").glob("*.parquet"))
    assert sum(sizes) == PHOTOS + 1 and len(sizes) <= 3 and min(sizes[1:], default=10) >= 10, sizes


def test_output_must_be_a_new_folder_and_json_is_refused(
    ray_local, onnx_run: Path, photos: Path, tmp_path: Path, capsys
) -> None:
    base = ["predict", str(photos), "--model", str(onnx_run), "--ray"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.parquet").write_bytes(b"")
    assert main([*base, "--output", str(tmp_path / "full")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([*base, "--format", "json", "--output", str(tmp_path / "x")]) == 2
    assert main([*base]) == 2
    assert "--ray writes --output FOLDER" in capsys.readouterr().err


def test_features_on_ray_are_the_single_process_cache(ray_local, photos: Path, tmp_path) -> None:
    """Same key, same values, augmented views included, over several batches; a second run
    finds the entry and computes nothing."""
    import keras

    from cardamage.distributed.features import RayFill
    from cardamage.model.multitask import build_model
    from cardamage.tasks import default_tasks
    from cardamage.train.features import Extractor

    spec = ModelSpec("mobilenet", "none", 32, alpha=0.25)
    keras.utils.set_random_seed(3)
    backbone = build_model(spec, default_tasks()[:1]).branch_backbones[0]
    normalise_batchnorm(backbone, np.random.default_rng(3).uniform(0, 255, (16, 32, 32, 3)))
    paths = sorted(photos.glob("*.jpg"))[:10]
    request = FeatureRequest(spec, paths, AugmentConfig(), views=2, seed=5)
    here = np.array(cached_features(backbone, request, tmp_path / "here", batch_size=4))
    extractor = Extractor(spec, default_tasks()[:1], backbone.get_weights(), False, "float32")
    fill = RayFill(None, extractor)
    on_ray = np.array(cached_features(backbone, request, tmp_path / "ray", 4, fill))
    assert [p.name for p in (tmp_path / "ray").iterdir()] == [request.key()]
    assert [p.name for p in (tmp_path / "here").iterdir()] == [request.key()]
    np.testing.assert_allclose(on_ray, here, rtol=1e-4, atol=1e-5)
    assert np.abs(here[1] - here[0]).max() > 1e-3  # view 1 is augmented, not the photo again

    def refuse(*args) -> None:
        raise AssertionError("a warm cache computes nothing")

    warm = cached_features(backbone, request, tmp_path / "ray", 4, refuse)
    np.testing.assert_array_equal(warm, on_ray)


@pytest.mark.slow
def test_train_with_ray_writes_the_cache_a_single_process_run_then_reuses(
    ray_local, tmp_path: Path
) -> None:
    from cardamage.synthetic import generate_dataset

    data = generate_dataset(tmp_path / "synth", n=24, size=48, seed=3)
    cache = tmp_path / "cache"
    tiny = "--backbone mobilenet --alpha 0.25 --weights none --image-size 32 --folds 2"
    base = ["train", "--data", str(data), *tiny.split(), "--epochs", "1", "--views", "2"]
    base += ["--cache-dir", str(cache)]
    assert main([*base, "--out", str(tmp_path / "on_ray"), "--ray"]) == 0
    [entry] = list(cache.iterdir())
    written = (entry / "features.npy").stat().st_mtime_ns
    assert json.loads((tmp_path / "on_ray" / "config.json").read_text())["run"]["ray"] == "local"
    assert main([*base, "--out", str(tmp_path / "here")]) == 0  # no --ray: the same key, warm
    assert list(cache.iterdir()) == [entry]
    assert (entry / "features.npy").stat().st_mtime_ns == written
