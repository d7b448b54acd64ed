"""Inference speed end to end: 640x640 JPEG bytes in, predictions for all three tasks out.

Rows, per backbone, at batch 32:
  a     the original's design: three separate Keras models (backbone + head each), one
        ``model.predict`` call per image per task, 160 px, pixels / 255, full-size decode
  b     our Predictor with the Keras engine
  c     our Predictor with the ONNX engine
  c+    the same, decoding the next batch in threads while the engine runs on this one
        (prototype of the proposed Predictor change: Pillow and ONNX Runtime release the GIL)
  d, d+ the same two with the int8 ONNX engine
  bare  the bare backbone forward pass in ONNX Runtime on ready pixels, same size and batch

Photos: the real 640x640 car-damage photos in ../shared/data/lensor-coco when present, else
the project's procedural ones. Speed rows use random weights (nothing is downloaded), batch
norms set from a batch of photos so activations have a trained network's scale. int8 accuracy
is judged where it means something: an ImageNet MobileNetV2 (../shared/weights) with heads
trained on lensor's train split, scored on its held-out val and test photos.

Machines are shared: rounds are interleaved, each row reports its best round (and median), and
ratios come from one run. From the repository root: ``.venv/bin/python -m bench.inference``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
from PIL import Image

from bench.common import (
    LENSOR,
    LENSOR_SEVERITIES,
    LENSOR_TYPES,
    SHARED,
    WEIGHTS,
    durations,
    parser,
    saved_model,
    source_photo,
)
from cardamage.data.images import load_image
from cardamage.inference.engines import onnx_session, physical_cores
from cardamage.inference.export import export_model
from cardamage.inference.predictor import Predictor
from cardamage.metrics.classification import decide, task_metrics
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import ModelBundle, build_model
from cardamage.synthetic import draw_sample
from cardamage.tasks import Task, TaskKind, default_tasks

#: where ``--shared`` holds the photos and the pretrained weights
PHOTOS, PRETRAINED = LENSOR.relative_to(SHARED), WEIGHTS.relative_to(SHARED)
ALPHAS = {"mobilenet": 1.0}
APPLICATIONS = {"mobilenet": "MobileNet", "resnet50v2": "ResNet50V2"}
ORIGINAL_SIZE = 160
PHOTO_SIZE = 640
#: (c)/bare targets of the issue; (c)/(a) >= 5x for both, (d)/(c) >= 1.5x for ResNet50V2.
BARE_TARGETS = {"mobilenet": 0.70, "resnet50v2": 0.85}
ROWS = {
    "a": "(a) original: 3 models, predict per image",
    "b": "(b) Keras predictor",
    "c": "(c) ONNX predictor",
    "d": "(d) int8 ONNX predictor",
    "bare": "bare ONNX backbone forward (no decode)",
}
#: lensor's image-level tasks (it has no location labels).
LENSOR_TASKS = [
    Task("severity", TaskKind.MULTICLASS, LENSOR_SEVERITIES),
    Task("damage_type", TaskKind.MULTILABEL, LENSOR_TYPES),
]


@dataclass(frozen=True)
class Labelled:
    sources: list[Path]
    labels: dict[str, list[tuple[str, ...]]]  # task name -> each photo's labels


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    print(_environment())
    started = time.perf_counter()
    photos = speed_photos(args.shared / PHOTOS, args.images)
    print(
        f"{len(photos)} photos {PHOTO_SIZE}x{PHOTO_SIZE} JPEG, "
        f"{np.mean([len(p) for p in photos]) / 1024:.0f} KiB on average\n"
    )
    with tempfile.TemporaryDirectory(prefix="cardamage-bench-") as tmp:
        for backbone in args.backbones:
            bench_backbone(backbone, photos, Path(tmp) / backbone, args)
        if args.accuracy:
            int8_accuracy(args.shared, Path(tmp) / "accuracy", args.size)
    print(f"load average at the end: {_load()}; total {time.perf_counter() - started:.0f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--backbones", nargs="*", default=list(APPLICATIONS), choices=APPLICATIONS)
    p.add_argument("--images", type=int, default=128, help="photos per round for b, c, d")
    p.add_argument("--original-images", type=int, default=16, help="photos per round for a")
    p.add_argument("--size", type=int, default=224, help="input size of our model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--latency-images", type=int, default=16)
    p.add_argument("--shared", type=Path, default=SHARED, help="photos and pretrained weights")
    p.add_argument(
        "--no-accuracy",
        dest="accuracy",
        action="store_false",
        help="skip the int8 accuracy check on a pretrained MobileNetV2",
    )
    return p


def _environment() -> str:
    return (
        f"{os.cpu_count()} CPUs ({physical_cores()} physical cores for ONNX Runtime), "
        f"onnxruntime {ort.__version__}, keras {keras.__version__} on {keras.backend.backend()}, "
        f"load average {_load()}"
    )


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ---- photos ---------------------------------------------------------------------------------


def speed_photos(lensor: Path, count: int) -> list[bytes]:
    """Real 640x640 photos (lensor's val and test splits) or, without them, procedural ones."""
    paths = sorted((lensor / "images" / "val").glob("*.jpg"))
    paths += sorted((lensor / "images" / "test").glob("*.jpg"))
    if paths:
        return [path.read_bytes() for path in (paths * count)[:count]]
    print(f"({lensor} not found: procedural photos)")
    photos = []
    for i in range(count):
        buffer = io.BytesIO()
        draw_sample(np.random.default_rng([1, i]), PHOTO_SIZE).image.save(buffer, "JPEG")
        photos.append(buffer.getvalue())
    return photos


def lensor_split(lensor: Path, split: str, one_per_source: bool) -> Labelled:
    """Image-level labels from lensor's boxes: the worst severity, the set of damage types.

    Photos without boxes have no severity and are left out. Its train split holds ~3 augmented
    copies of each source photo; ``one_per_source`` keeps one.
    """
    coco = json.loads((lensor / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"].split("-") for c in coco["categories"] if "-" in c["name"]}
    boxes: dict[int, list[list[str]]] = {}
    for box in coco["annotations"]:
        if box["category_id"] in names:
            boxes.setdefault(box["image_id"], []).append(names[box["category_id"]])
    severities, kinds = LENSOR_TASKS[0].labels, LENSOR_TASKS[1].labels
    sources, labels, seen = [], {"severity": [], "damage_type": []}, set()
    for image in sorted(coco["images"], key=lambda i: i["file_name"]):
        source = source_photo(Path(image["file_name"]))
        found = boxes.get(image["id"])
        if not found or (one_per_source and source in seen):
            continue
        seen.add(source)
        sources.append(lensor / "images" / split / image["file_name"])
        labels["severity"].append((max((s for s, _ in found), key=severities.index),))
        labels["damage_type"].append(tuple(k for k in kinds if any(t == k for _, t in found)))
    return Labelled(sources, labels)


# ---- models ---------------------------------------------------------------------------------


def build_ours(backbone: str, size: int, photos: list[bytes], workdir: Path) -> tuple[Path, Path]:
    """Our shared-backbone model with random weights, saved and exported to fp32 and int8 ONNX;
    and the bare backbone in ONNX. Returns (model directory, bare backbone ONNX file)."""
    spec = ModelSpec(backbone, "none", size, alpha=ALPHAS.get(backbone))
    model_dir = workdir / "model"
    pixels = np.stack([load_image(p, size) for p in photos[:32]])
    model = saved_model(model_dir, spec, "benchmark: random weights", pixels)
    started = time.perf_counter()
    export_model(model_dir, "onnx", int8=True, calibration=photos[-32:])
    print(f"  exported to ONNX fp32 + int8 in {time.perf_counter() - started:.0f} s")
    bare = workdir / "backbone.onnx"
    model.backbone.export(str(bare), format="onnx", verbose=False)
    return model_dir, bare


def build_original(backbone: str, tasks: Sequence[Task]) -> dict[str, keras.Model]:
    """The original's design: one whole model per task, each with its own backbone."""
    models = {}
    for task in tasks:
        app = getattr(keras.applications, APPLICATIONS[backbone])(
            include_top=False,
            weights=None,
            input_shape=(ORIGINAL_SIZE, ORIGINAL_SIZE, 3),
            pooling="avg",
            **({"alpha": ALPHAS[backbone]} if backbone in ALPHAS else {}),
        )
        activation = "softmax" if task.multiclass else "sigmoid"
        head = keras.layers.Dense(len(task.labels), activation=activation)(app.output)
        models[task.name] = keras.Model(app.input, head, name=f"original_{task.name}")
    return models


# ---- the timed paths ------------------------------------------------------------------------


def original_predict(models: dict[str, keras.Model], photos: Sequence[bytes]) -> None:
    """As the original served: full-size decode, resize, / 255, one predict per task."""
    for photo in photos:
        image = Image.open(io.BytesIO(photo)).convert("RGB")
        image = image.resize((ORIGINAL_SIZE, ORIGINAL_SIZE), Image.Resampling.NEAREST)
        pixels = np.asarray(image, np.float32)[None] / 255.0
        for model in models.values():
            model.predict(pixels, verbose=0)


def bare_forward(session: ort.InferenceSession, count: int, batch: int, size: int) -> None:
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    name = session.get_inputs()[0].name
    for _ in range(max(1, count // batch)):
        session.run(None, {name: pixels})


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    return 1000 * statistics.median(durations(lambda _: run(), range(repeats)))


# ---- one backbone ---------------------------------------------------------------------------


def bench_backbone(backbone: str, photos: list[bytes], workdir: Path, args) -> None:
    print(f"== {backbone} ({args.size} px, original {ORIGINAL_SIZE} px), batch {args.batch}")
    model_dir, bare_file = build_ours(backbone, args.size, photos, workdir)
    original = build_original(backbone, default_tasks())
    engines = {e: Predictor.load(model_dir, engine=e) for e in ("keras", "onnx", "onnx-int8")}
    bare = onnx_session(bare_file)
    b = args.batch
    rows: dict[str, Callable[[Sequence[bytes]], object]] = {
        "a": lambda j: original_predict(original, j),
        "b": lambda j: engines["keras"].predict(j, b),
        "c": lambda j: engines["onnx"].predict(j, b),
        "d": lambda j: engines["onnx-int8"].predict(j, b),
        "bare": lambda j: bare_forward(bare, len(j), b, args.size),
    }
    results = _time_rows(rows, photos, args)
    _report(backbone, results)
    _report_latency(engines["onnx"], bare, photos[: args.latency_images], args.size)
    _report_agreement(engines["onnx"], engines["onnx-int8"], photos)
    print()


def _time_rows(rows, photos: list[bytes], args) -> dict[str, list[float]]:
    """images/s of every row in every round; rows alternate so load spikes hit all alike."""
    inputs = {name: photos for name in rows}
    inputs["a"] = photos[: args.original_images]
    inputs["bare"] = photos[: len(photos) - len(photos) % args.batch]
    for name, run in rows.items():  # warm-up: first calls build graphs and thread pools
        run(inputs[name][: args.batch])
    results: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, run in rows.items():
            started = time.perf_counter()
            run(inputs[name])
            results[name].append(len(inputs[name]) / (time.perf_counter() - started))
    return results


def _report(backbone: str, results: dict[str, list[float]]) -> None:
    print(f"  {'images/s':<46} {'best':>8} {'median':>8}")
    for name, label in ROWS.items():
        print(f"  {label:<46} {max(results[name]):8.1f} {statistics.median(results[name]):8.1f}")
    best = {name: max(values) for name, values in results.items()}
    target = BARE_TARGETS.get(backbone, 0.70)
    print("  ratios of best rounds                    ratio  target")
    _ratio("(c)/(a)", best["c"] / best["a"], ">= 5x", "x")
    _ratio("(c)/bare", best["c"] / best["bare"], f">= {target:.0%}")
    _ratio("(d)/(c)", best["d"] / best["c"], ">= 1.5x (ResNet50V2)", "x")


def _ratio(name: str, ratio: float, target: str, unit: str = "%") -> None:
    shown = f"{ratio:.2f}x" if unit == "x" else f"{ratio:.0%}"
    print(f"    {name:<28} {shown:>12}  {target}")


def _report_latency(predictor: Predictor, bare: ort.InferenceSession, photos, size: int) -> None:
    """One photo through the whole predictor beside one image through the bare backbone."""
    queue = iter(photos * 2)
    predictor_ms = median_ms(lambda: predictor.predict([next(queue)]), len(photos))
    pixels = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    name = bare.get_inputs()[0].name
    bare_ms = median_ms(lambda: bare.run(None, {name: pixels}), len(photos))
    print(
        f"  single image, median: (c) ONNX predictor {predictor_ms:.1f} ms, "
        f"bare backbone {bare_ms:.1f} ms"
    )


def _report_agreement(fp32: Predictor, int8: Predictor, photos: list[bytes]) -> None:
    """Random weights: only how often int8 decides as fp32 does (a weak proxy)."""
    x, y = _scores(fp32, photos), _scores(int8, photos)
    parts = [f"{task.name} {_same(task, x[task.name], y[task.name]):.0%}" for task in fp32.tasks]
    diff = np.mean([np.abs(x[name] - y[name]).mean() for name in x])
    print(
        f"  int8 = fp32 decisions (random weights): {', '.join(parts)}; "
        f"mean |score diff| {diff:.4f}"
    )


def _scores(predictor: Predictor, sources: Sequence) -> dict[str, np.ndarray]:
    predictions = predictor.predict(sources)
    return {
        t.name: np.stack([p.tasks[t.name].scores for p in predictions]) for t in predictor.tasks
    }


def _same(task: Task, x: np.ndarray, y: np.ndarray) -> float:
    """Share of photos on which all of a task's decisions agree."""
    return float((decide(task, x) == decide(task, y)).all(axis=1).mean())


# ---- int8 accuracy on a pretrained backbone -------------------------------------------------


def int8_accuracy(shared: Path, workdir: Path, size: int) -> None:
    """Held-out metrics of fp32 and int8 ONNX for an ImageNet MobileNetV2 with trained heads."""
    lensor, weights = shared / PHOTOS, shared / PRETRAINED
    if not (lensor.is_dir() and weights.is_file()):
        print(f"int8 accuracy: skipped ({lensor} or {weights} not found)")
        return
    print(f"== int8 accuracy: MobileNetV2 1.0 ImageNet ({size} px), heads trained on lensor")
    train = lensor_split(lensor, "train", one_per_source=True)
    held_out = _held_out(lensor, {source_photo(path) for path in train.sources})
    spec = ModelSpec("mobilenetv2", str(weights), size, alpha=1.0)
    model = build_model(spec, LENSOR_TASKS)
    fit_heads(
        model.backbone,
        model.branch_heads[0],
        np.stack([load_image(s, size) for s in train.sources]),
        train,
    )
    model_dir = workdir / "model"
    ModelBundle(model, spec, LENSOR_TASKS, {"note": "benchmark"}).save(model_dir)
    export_model(model_dir, "onnx", int8=True, calibration=train.sources[:64])
    fp32 = _scores(Predictor.load(model_dir, engine="onnx"), held_out.sources)
    int8 = _scores(Predictor.load(model_dir, engine="onnx-int8"), held_out.sources)
    print(
        f"  {len(train.sources)} training photos (one per source), "
        f"{len(held_out.sources)} held-out photos (val + test, sources not in train)"
    )
    for task in LENSOR_TASKS:
        _report_metrics(
            task, task.encode(held_out.labels[task.name]), fp32[task.name], int8[task.name]
        )
    print()


def _report_metrics(task: Task, truth: np.ndarray, fp32: np.ndarray, int8: np.ndarray) -> None:
    fp32_metrics, int8_metrics = task_metrics(task, truth, fp32), task_metrics(task, truth, int8)
    for key in ("accuracy", "micro_f1", "macro_f1"):
        if key in fp32_metrics:
            a, b = fp32_metrics[key], int8_metrics[key]
            change = f"{100 * (b - a):+.1f} points"
            print(f"  {task.name:<12} {key:<9} fp32 {a:.3f}  int8 {b:.3f}  ({change})")
    print(f"  {task.name:<12} same decisions on {_same(task, fp32, int8):.1%} of photos")


def _held_out(lensor: Path, train_sources: set[str]) -> Labelled:
    """val + test photos whose source photo is not in train (a few are)."""
    sources, labels = [], {t.name: [] for t in LENSOR_TASKS}
    for split in ("val", "test"):
        part = lensor_split(lensor, split, one_per_source=False)
        for i, path in enumerate(part.sources):
            if source_photo(path) not in train_sources:
                sources.append(path)
                for name, values in part.labels.items():
                    labels[name].append(values[i])
    return Labelled(sources, labels)


def fit_heads(backbone, heads, pixels: np.ndarray, train: Labelled) -> None:
    """Train the heads on the frozen backbone's features, as the frozen training phase does."""
    features = backbone.predict(pixels.astype(np.float32), batch_size=32, verbose=0)
    losses = {
        t.name: "categorical_crossentropy" if t.multiclass else "binary_crossentropy"
        for t in LENSOR_TASKS
    }
    heads.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses)
    targets = {t.name: t.encode(train.labels[t.name]) for t in LENSOR_TASKS}
    heads.fit(features, targets, epochs=30, batch_size=32, verbose=0)


if __name__ == "__main__":
    sys.exit(main())
