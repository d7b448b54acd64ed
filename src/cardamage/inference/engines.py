"""Inference engines: a callable from a batch of pixels to per-task probabilities.

The Predictor does everything else (decoding, thresholds, output shape), so engines stay small
and interchangeable, and their outputs can be compared one to one.

Nothing here imports Keras or TensorFlow at module level: with the ONNX engine the serving path
stays free of them (about 2.5 s and 1.3 GB lighter than TensorFlow, and faster on CPU).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from cardamage.errors import CardamageError
from cardamage.model.metadata import FEATURES, MODEL_FILE, ModelMeta

#: ONNX exports live in the model directory, beside model.keras and model.json.
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
#: ONNX metadata key holding the sha256 of the model.keras an export was made from.
SOURCE_DIGEST_KEY = "cardamage.source_sha256"


class Engine(Protocol):
    name: str

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """float32 (n, size, size, 3) pixels in [0, 255] -> {task name: (n, labels) scores}."""
        ...


class KerasEngine:
    """``model``: the MultiTaskClassifier (explanations use it); calls run its serving graph,
    which also outputs the features."""

    name = "keras"

    def __init__(self, model) -> None:
        self.model = model
        self.serving = model.with_features()

    @classmethod
    def load(cls, model_dir: Path) -> KerasEngine:
        from cardamage.model.multitask import ModelBundle

        if not (model_dir / MODEL_FILE).exists():
            raise CardamageError(f"no Keras model in {model_dir} (missing {MODEL_FILE})")
        return cls(ModelBundle.load(model_dir).model)

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        out = self.serving.predict_on_batch(np.asarray(pixels, dtype=np.float32))
        return {name: np.asarray(value) for name, value in out.items()}


class OnnxEngine:
    """ONNX Runtime on an exported model (`cardamage export MODEL --format onnx`).

    The export names the graph's outputs after the tasks, so scores map back by name, never by
    position; a graph whose outputs are not the model's tasks, or one exported from an earlier
    model.keras than the one beside it (a retrained model), is refused at load.
    """

    name = "onnx"
    filename = ONNX_FILE
    export_hint = "--format onnx"

    def __init__(self, session) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        self.outputs = [output.name for output in session.get_outputs()]

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = None) -> OnnxEngine:
        """``threads``: ONNX Runtime's intra-op threads (default: one per physical core)."""
        path = model_dir / cls.filename
        if not path.exists():
            raise CardamageError(
                f"no ONNX model in {model_dir} (missing {cls.filename}): "
                f"run `cardamage export {model_dir} {cls.export_hint}`"
            )
        engine = cls(onnx_session(path, threads))
        engine.check_matches(model_dir)
        return engine

    def check_matches(self, model_dir: Path) -> None:
        """Refuse an export that would serve other tasks or other weights than model_dir's."""
        path = model_dir / self.filename
        tasks = {task.name for task in ModelMeta.read(model_dir).tasks}
        if set(self.outputs) - {FEATURES} != tasks:
            raise CardamageError(
                f"{path} outputs {sorted(self.outputs)}, but the model's tasks are "
                f"{sorted(tasks)}: export it again"
            )
        source = self.session.get_modelmeta().custom_metadata_map.get(SOURCE_DIGEST_KEY)
        keras_file = model_dir / MODEL_FILE
        if source and keras_file.exists() and source != file_digest(keras_file):
            raise CardamageError(f"{path} was exported from an earlier {MODEL_FILE}: export again")

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        feed = {self.input: np.ascontiguousarray(pixels, dtype=np.float32)}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))


class OnnxInt8Engine(OnnxEngine):
    """The int8 export (`--int8`): its forward pass ran 2.7-3.5x fp32 on AVX-512 VNNI cores."""

    name = "onnx-int8"
    filename = ONNX_INT8_FILE
    export_hint = "--format onnx --int8"


def onnx_session(path: Path, threads: int | None = None):
    """An InferenceSession on CUDA when this onnxruntime build has it, else on the CPU."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise CardamageError(
            "the ONNX engines need onnxruntime: pip install onnxruntime (onnxruntime-gpu for CUDA)"
        ) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    providers = ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise CardamageError(f"cannot load {path}: {str(e).strip().splitlines()[0]}") from None


def file_digest(path: Path) -> str:
    """sha256 of a file: ties an export to the exact model.keras it was made from."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def physical_cores() -> int:
    """Cores this process may run on, each counted once however many hardware threads it has.

    ONNX Runtime gains nothing from a core's second hardware thread, and more threads than cores
    make its parallel loops wait for descheduled workers.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:  # no sysfs topology (containers, other systems): count what we may use
            return len(cpus)
    return len(cores)


ENGINES: dict[str, type[KerasEngine] | type[OnnxEngine]] = {
    "keras": KerasEngine,
    "onnx": OnnxEngine,
    "onnx-int8": OnnxInt8Engine,
}


def load_engine(name: str, model_dir: Path) -> Engine:
    if name not in ENGINES:
        raise CardamageError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
    return ENGINES[name].load(model_dir)
