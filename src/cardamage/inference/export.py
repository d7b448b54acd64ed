"""Export a trained model for serving: ONNX (optionally int8), TensorFlow SavedModel, TFLite.

ONNX is the serving format: ONNX Runtime was the fastest CPU engine measured here and serves
without TensorFlow. By default it is written into the model directory, beside model.keras and
model.json, so one directory carries everything the Keras and ONNX engines need.

Every file is written under a temporary name and renamed into place, so a failed or killed
export never leaves a half-written model where a server would load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from cardamage.data.images import load_image
from cardamage.errors import CardamageError
from cardamage.inference.engines import (
    ONNX_FILE,
    SOURCE_DIGEST_KEY,
    file_digest,
)
from cardamage.io import atomic_path, atomic_write_bytes
from cardamage.model.metadata import FEATURES, MODEL_FILE, ModelMeta, resolve_model_dir
from cardamage.tasks import Task

Format = Literal["onnx", "savedmodel", "tflite"]
FORMATS: tuple[str, ...] = ("onnx", "savedmodel", "tflite")
SAVEDMODEL_DIR = "savedmodel"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model.int8.tflite"
#: Synthesised calibration images when the caller brings none (int8 only).
CALIBRATION_COUNT = 32

ImageInput = str | Path | bytes


def export_model(
    model_dir_or_run: Path | str,
    format: Format,
    out: Path | None = None,
    int8: bool = False,
    calibration: Sequence[ImageInput] | None = None,
) -> Path:
    """Export the model of a run or model directory; return the path written.

    ``out`` defaults to the model directory: model.onnx, savedmodel/, model.tflite (or
    model.int8.tflite). For ONNX, ``out`` names the fp32 file, and ``int8`` adds the quantised
    model beside it (model.onnx -> model.int8.onnx, where the onnx-int8 engine looks) and returns
    its path. ``calibration`` images set int8 activation ranges: pass a few dozen training photos
    for a trained model; without them synthesised images are used, which suit benchmarks better
    than production.
    """
    if format not in FORMATS:
        raise CardamageError(f"unknown export format '{format}' (known: {', '.join(FORMATS)})")
    model_dir = resolve_model_dir(model_dir_or_run)
    meta = ModelMeta.read(model_dir)
    if not (model_dir / MODEL_FILE).exists():
        raise CardamageError(f"no Keras model to export in {model_dir} (missing {MODEL_FILE})")
    target = Path(out) if out is not None else model_dir / _default_name(format, int8)
    pixels = _calibration_pixels(calibration, meta.spec.image_size) if int8 else None
    try:
        model = _float32_model(model_dir)
        if format == "onnx":
            return _export_onnx(model, meta.tasks, model_dir, target, pixels)
        if format == "savedmodel":
            return _export_savedmodel(model, target)
        return _export_tflite(model, target, pixels)
    except CardamageError:
        raise
    except Exception as e:  # exporters raise anything from ValueError to converter internals
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CardamageError(f"cannot export {model_dir} to {format}: {reason}") from e


def _default_name(format: str, int8: bool) -> str:
    if format == "onnx":
        return ONNX_FILE
    if format == "tflite":
        return TFLITE_INT8_FILE if int8 else TFLITE_FILE
    return SAVEDMODEL_DIR


def int8_path(fp32_path: Path) -> Path:
    """Where the int8 model of an fp32 ONNX file goes: model.onnx -> model.int8.onnx."""
    return fp32_path.with_name(f"{fp32_path.stem}.int8{fp32_path.suffix}")


def _float32_model(model_dir: Path):
    """The saved Keras model's serving graph (scores and features), computing in float32 and
    called once, as the exporters need.

    A model trained under mixed precision keeps float16 layers when loaded: its architecture is
    rebuilt in float32 (no weights download) and its float32 weights copied over.
    """
    import keras

    from cardamage.model.backbones import nested_layers
    from cardamage.model.multitask import ModelBundle, build_model

    bundle = ModelBundle.load(model_dir)
    model = bundle.model
    if any(layer.dtype_policy.compute_dtype != "float32" for layer in nested_layers(model)):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            spec = dataclasses.replace(bundle.spec, weights="none")
            model = build_model(spec, bundle.tasks)
        finally:
            keras.config.set_dtype_policy(previous)
        model.set_weights(bundle.model.get_weights())
    size = bundle.spec.image_size
    serving = model.with_features()  # the features travel with the scores, for every engine
    serving(np.zeros((1, size, size, 3), np.float32))  # the ONNX exporter refuses uncalled models
    return serving


# ---- ONNX -----------------------------------------------------------------------------------


def _export_onnx(
    model, tasks: Sequence[Task], model_dir: Path, target: Path, int8_pixels: np.ndarray | None
) -> Path:
    """fp32 ONNX at ``target``; with calibration pixels also its int8 model, beside it."""
    digest = file_digest(model_dir / MODEL_FILE)
    with atomic_path(target) as tmp:
        model.export(str(tmp), format="onnx", verbose=False)
        _finish_onnx(tmp, tasks, digest)
    if int8_pixels is None:
        return target
    with atomic_path(int8_path(target)) as tmp:
        quantize_onnx(target, tmp, int8_pixels)
        _finish_onnx(tmp, tasks, digest)
    return int8_path(target)


def _finish_onnx(path: Path, tasks: Sequence[Task], digest: str) -> None:
    """Check outputs are named after the tasks (and the features), name the batch axis, record
    the source model.

    Keras' exporter (tf2onnx) names the outputs of a dict-output model after the dict keys, the
    task names; the check keeps a future exporter that numbers them from serving swapped tasks.
    """
    import onnx

    proto = onnx.load(str(path))
    names = {output.name for output in proto.graph.output}
    if names != {task.name for task in tasks} | {FEATURES}:
        raise CardamageError(
            f"the ONNX exporter named the outputs {sorted(names)}, not the tasks and {FEATURES}"
        )
    for value in [*proto.graph.input, *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.helper.set_model_props(proto, {SOURCE_DIGEST_KEY: digest})
    onnx.save(proto, str(path))


def quantize_onnx(fp32: Path, out: Path, pixels: np.ndarray) -> None:
    """Static int8 quantisation of the backbone: QDQ, u8 activations, s8 per-channel weights.

    Measured on AVX-512 VNNI cores: static QDQ ran about 3x the fp32 throughput, while dynamic
    quantisation ran slower than fp32 (its convolutions fall back to slow integer kernels).
    Per-channel weights cost no measurable speed and are what keeps MobileNet-style depthwise
    convolutions accurate once batch norms are folded into them (per-tensor scales are known to
    wreck them). ``pixels`` (n, size, size, 3) set the activation ranges.
    """
    import onnx
    from onnxruntime import quantization as q

    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and graph fusion first (symbolic shapes would need sympy: not needed
        # for a fixed image size)
        q.quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        q.quantize_static(
            str(prepared),
            str(out),
            _CalibrationBatches(graph.input[0].name, pixels),
            quant_format=q.QuantFormat.QDQ,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=_after_last_conv(graph),
        )


def _after_last_conv(graph) -> list[str]:
    """Nodes no convolution follows: final activation, pooling and the task heads.

    They stay in float: they cost next to nothing, and quantising them would put 8-bit steps
    (multiples of 1/255) into the probabilities users see and thresholds cut.
    Squeeze-and-excitation pools inside a backbone are followed by convolutions, so they are
    quantised like the rest of it.
    """
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_conv: dict[int, bool] = {}
    for node in reversed(graph.node):  # ONNX graphs are topologically sorted
        after = [c for output in node.output for c in consumers.get(output, [])]
        feeds_conv[id(node)] = any(c.op_type == "Conv" or feeds_conv[id(c)] for c in after)
    return [n.name for n in graph.node if n.op_type != "Conv" and not feeds_conv[id(n)]]


class _CalibrationBatches:
    """onnxruntime's CalibrationDataReader protocol: one input feed per call, None when done."""

    def __init__(self, input_name: str, pixels: np.ndarray, batch_size: int = 8) -> None:
        batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
        self._feeds = iter([{input_name: b.astype(np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _calibration_pixels(sources: Sequence[ImageInput] | None, size: int) -> np.ndarray:
    if sources is None:
        return synthetic_images(CALIBRATION_COUNT, size)
    if not sources:
        raise CardamageError("no calibration images given for int8 quantisation")
    return np.stack([load_image(source, size) for source in sources])


def synthetic_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Photo-like random images, uint8 (count, size, size, 3).

    Smooth colour fields with solid shapes and sensor noise: activation statistics closer to
    photos than uniform noise gives, and JPEG-compressible like photos, for calibration and
    benchmarks where no real images may be used.
    """
    rng = np.random.default_rng(seed)
    return np.stack([_synthetic_image(rng, size) for _ in range(count)])


def _synthetic_image(rng: np.random.Generator, size: int) -> np.ndarray:
    field = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(size // 32 + 1, size // 2 + 2, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        colour = tuple(rng.integers(0, 256, 3).tolist())
        shape([int(x), int(y), int(x + w), int(y + h)], fill=colour)
    noisy = np.asarray(image, np.float32) + rng.normal(0.0, 8.0, (size, size, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


# ---- TensorFlow -----------------------------------------------------------------------------


def _export_savedmodel(model, target: Path) -> Path:
    with _atomic_dir(target) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False)
    return target


def _export_tflite(model, target: Path, pixels: np.ndarray | None) -> Path:
    """Convert through a SavedModel, TFLite's best-supported input; int8 when pixels are given."""
    import tensorflow as tf

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".savedmodel.", dir=target.parent) as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if pixels is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            samples = pixels.astype(np.float32)
            converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
        atomic_write_bytes(target, converter.convert())
    return target


@contextlib.contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """A temporary directory beside ``target``, renamed onto it only if the block succeeds.

    A directory cannot be renamed onto a non-empty one, so an old export is moved aside first
    and deleted after: readers see the old export or the new one, never a mix.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; an exported model should be shareable
    try:
        yield tmp
        if target.exists():
            old = tmp.with_name(f"{tmp.name}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
