"""The feature cache: keyed by everything features depend on, reused, never half-written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cardamage.config import AugmentConfig
from cardamage.data.pipeline import iter_image_batches
from cardamage.model.backbones import build_backbone
from cardamage.model.metadata import ModelSpec
from cardamage.train.features import (
    ABANDONED_AFTER_S,
    FEATURES_FILE,
    WRITER_FILE,
    FeatureRequest,
    cached_features,
)

SPEC = ModelSpec("mobilenet", "none", 32, alpha=0.25)


@pytest.fixture
def request_(tmp_path: Path) -> FeatureRequest:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return FeatureRequest(SPEC, paths, AugmentConfig(), views=2, seed=1)


class CountingBackbone:
    """The real backbone, counting how often the cache had to run it."""

    def __init__(self) -> None:
        self.model = build_backbone("mobilenet", "none", 32, alpha=0.25)
        self.output_shape = self.model.output_shape
        self.calls = 0

    def predict_on_batch(self, batch):
        self.calls += 1
        return self.model.predict_on_batch(batch)


def test_view_zero_equals_an_uncached_forward_pass(request_: FeatureRequest, tmp_path: Path):
    backbone = CountingBackbone()
    features = cached_features(backbone, request_, tmp_path / "cache")
    assert features.shape == (2, 5, backbone.output_shape[-1])
    direct = np.concatenate(
        [backbone.model.predict_on_batch(b) for b in iter_image_batches(request_.paths, 32, 64)]
    )
    np.testing.assert_allclose(
        features[0], direct, rtol=1e-4, atol=0
    )  # random weights: tiny values
    assert not np.allclose(features[1], features[0], rtol=1e-2, atol=0)  # view 1 is augmented


def test_second_call_reuses_the_cache(request_: FeatureRequest, tmp_path: Path) -> None:
    backbone = CountingBackbone()
    first = np.array(cached_features(backbone, request_, tmp_path / "cache"))
    calls = backbone.calls
    second = cached_features(backbone, request_, tmp_path / "cache")
    assert backbone.calls == calls and calls > 0
    np.testing.assert_array_equal(first, second)
    assert not list((tmp_path / "cache").glob(".*")), "no temporary entry left"


def test_key_covers_everything_features_depend_on(request_: FeatureRequest) -> None:
    key = request_.key()
    assert key == replace(request_).key()
    changed = [
        replace(request_, spec=replace(SPEC, image_size=48)),
        replace(request_, spec=replace(SPEC, alpha=0.5)),
        replace(request_, spec=replace(SPEC, backbone="mobilenetv2")),
        replace(request_, augment=AugmentConfig(brightness=0.1)),
        replace(request_, views=3),
        replace(request_, seed=2),
        replace(request_, paths=request_.paths[:4]),
    ]
    assert len({key, *(r.key() for r in changed)}) == len(changed) + 1
    request_.paths[0].write_bytes(request_.paths[1].read_bytes())  # same name, new bytes
    assert request_.key() != key


def test_weights_file_content_is_part_of_the_key(request_: FeatureRequest, tmp_path: Path):
    weights = tmp_path / "w.weights.h5"
    build_backbone("mobilenet", "none", 32, alpha=0.25).core.save_weights(weights)
    with_file = replace(request_, spec=replace(SPEC, weights=str(weights)))
    key = with_file.key()
    build_backbone("mobilenet", "none", 32, alpha=0.25).core.save_weights(weights)
    assert with_file.key() != key


def test_an_interrupted_computation_leaves_no_entry(request_: FeatureRequest, tmp_path: Path):
    class Broken(CountingBackbone):
        def predict_on_batch(self, batch):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_features(Broken(), request_, tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob(FEATURES_FILE))
    assert not any((tmp_path / "cache").iterdir())


def _partial(cache: Path, name: str, writer: dict | None, age_s: float = 0) -> Path:
    """A partial entry as a writer leaves it when killed: a features.npy, its writer recorded."""
    partial = cache / name
    partial.mkdir(parents=True)
    np.save(partial / FEATURES_FILE, np.zeros((1, 5, 8), np.float32))
    if writer is not None:
        (partial / WRITER_FILE).write_text(json.dumps(writer))
    stamp = time.time() - age_s
    os.utime(partial, (stamp, stamp))
    return partial


def test_partial_entries_of_dead_writers_are_removed(request_: FeatureRequest, tmp_path: Path):
    """Killed writers' partial folders go; a live writer's stays, whatever its age; those whose
    writer cannot be asked (another host, none recorded) go only after a day."""
    cache, host, day = tmp_path / "cache", socket.gethostname(), ABANDONED_AFTER_S
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = _partial(cache, ".a.dead", {"host": host, "pid": int(ended.stdout)})
    live = _partial(cache, ".b.live", {"host": host, "pid": os.getpid()}, age_s=2 * day)
    old = _partial(cache, ".c.old", None, age_s=2 * day)
    young = _partial(cache, ".d.young", None)
    elsewhere = _partial(cache, ".e.elsewhere", {"host": f"not-{host}", "pid": 1})
    cached_features(CountingBackbone(), request_, cache)
    assert not dead.exists() and not old.exists()
    assert live.exists() and young.exists() and elsewhere.exists()


@pytest.mark.slow
def test_a_run_killed_while_extracting_leaves_nothing_the_next_run_keeps(
    request_: FeatureRequest, tmp_path: Path
) -> None:
    """kill -9 mid-extraction: its partial folder (features.npy and all) goes with the next run."""
    cache = tmp_path / "cache"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from cardamage.config import AugmentConfig\n"
        "from cardamage.model.metadata import ModelSpec\n"
        "from cardamage.train.features import FeatureRequest, cached_features\n"
        "class Stuck:\n"
        "    output_shape = (None, 8)\n"
        "    def predict_on_batch(self, batch):\n"
        "        time.sleep(600)\n"
        "spec = ModelSpec('mobilenet', 'none', 32, alpha=0.25)\n"
        "paths = [Path(p) for p in sys.argv[2:]]\n"
        "request = FeatureRequest(spec, paths, AugmentConfig(), views=2, seed=1)\n"
        "cached_features(Stuck(), request, Path(sys.argv[1]))\n"
    )
    args = [sys.executable, "-c", script, str(cache), *map(str, request_.paths)]
    writer = subprocess.Popen(args, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(cache.glob(f".*/{FEATURES_FILE}")):
        assert writer.poll() is None, writer.communicate()[1][-2000:]
        assert time.time() < deadline, "the writer never started its entry"
        time.sleep(0.1)
    writer.kill()
    writer.wait()
    [partial] = cache.glob(".*")
    features = cached_features(CountingBackbone(), request_, cache)
    assert features.shape[:2] == (2, 5)
    assert not partial.exists() and not list(cache.glob(".*"))
