"""`cardamage predict --ray`: photos scored as Ray Data stages, rows written by Ray.

decode (Ray tasks: read bytes from any filesystem, decode to the model's size) -> model (a pool
of actors, each holding one ONNX Runtime session of backbone and heads) -> decisions (Ray tasks:
thresholds, labels, summary: the rows of `cardamage predict`) -> Parquet, CSV or JSONL files.
Ray streams the stages with backpressure, so memory stays bounded for any number of photos, and
restarts an actor that dies (its own default: max_restarts=-1, max_task_retries=-1) and runs
its unfinished batches again; a batch's rows come out once, when its batch finished. A photo that
cannot be read is an error row, never a failed job.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardamage.distributed.cluster import connect
from cardamage.distributed.sources import Photo, absolute, filesystem, find_photos, read_bytes
from cardamage.errors import CardamageError
from cardamage.inference.batch import Row, flat_columns, flat_values, score_columns
from cardamage.inference.engines import OnnxEngine
from cardamage.inference.predictor import Predictor, predictions
from cardamage.model.metadata import META_FILE, ModelMeta
from cardamage.tasks import Task

#: Output formats and the Dataset writer of each.
WRITERS = {"parquet": "write_parquet", "csv": "write_csv", "jsonl": "write_json"}
#: Readers of the same formats, for the summary's count of error rows.
READ_FORMATS = {"parquet": "parquet", "csv": "csv", "jsonl": "json"}
#: CPUs a decoding, decision or write task reserves: light work next to the model, and a whole
#: CPU each would leave none to the model's actors on a small machine (or, for the writes that
#: Ray gives one CPU by default, hold every row back until the actors are done).
LIGHT_CPUS = 0.25
#: Photos per input block: enough blocks that every actor has work while others decode.
PHOTOS_PER_BLOCK = 128


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a Ray on this machine
    actors: int | None = None  # None: one per CPU (or GPU) of the cluster
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32


@dataclass(frozen=True)
class Outcome:
    predicted: int
    failed: int
    seconds: float


def predict_on_ray(
    predictor: Predictor,
    sources: list[str],
    recursive: bool,
    output: str,
    fmt: str,
    options: RayOptions,
) -> Outcome:
    """Score every photo the sources name into files under ``output``."""
    if not isinstance(predictor.engine, OnnxEngine):
        raise CardamageError("--ray runs the ONNX engines: add --engine onnx (or onnx-int8)")
    out = absolute(output)
    _check_empty(out)
    ray = connect(options.address)
    started = time.monotonic()
    photos = find_photos(sources, recursive)
    if not photos:
        raise CardamageError(f"no photos found in {' '.join(sources)}")
    dataset = pipeline(ray, predictor, photos, options)
    getattr(dataset, WRITERS[fmt])(out, ray_remote_args={"num_cpus": LIGHT_CPUS})
    predicted, failed = count_rows(out, fmt)
    return Outcome(predicted, failed, time.monotonic() - started)


def pipeline(ray, predictor: Predictor, photos: list[Photo], options: RayOptions):
    """The Dataset of output rows (lazy: it runs when written)."""
    model = model_files(predictor)
    size = predictor.image_size
    actors = options.actors or default_actors(ray, options)
    _check_fits(ray, actors, options)
    threads = max(1, int(options.cpus_per_actor))
    return (
        photo_dataset(ray, photos)
        .map_batches(
            decode, fn_kwargs={"size": size}, batch_size=options.batch_size, num_cpus=LIGHT_CPUS
        )
        .map_batches(
            Scorer,
            fn_constructor_args=(model, type(predictor.engine), threads),
            batch_size=options.batch_size,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=options.cpus_per_actor,
            num_gpus=options.gpus_per_actor or None,
        )  # Ray Data restarts an actor that dies and runs its unfinished batches again
        .map_batches(
            decide, fn_kwargs={"tasks": predictor.tasks}, batch_format="numpy", num_cpus=LIGHT_CPUS
        )
    )


def photo_dataset(ray, photos: list[Photo]):
    """The photos as blocks of PHOTOS_PER_BLOCK rows (image, uri)."""
    import pyarrow as pa

    table = pa.table({"image": [p.image for p in photos], "uri": [p.uri for p in photos]})
    blocks = math.ceil(len(photos) / PHOTOS_PER_BLOCK)
    return ray.data.from_arrow(
        [table.slice(i * PHOTOS_PER_BLOCK, PHOTOS_PER_BLOCK) for i in range(blocks)]
    )


def default_actors(ray, options: RayOptions) -> int:
    """One actor per GPU share, else per CPU share left once decoding has its own."""
    resources = ray.cluster_resources()
    if options.gpus_per_actor:
        return max(1, int(resources.get("GPU", 0) / options.gpus_per_actor))
    return max(1, int((resources.get("CPU", 1) - LIGHT_CPUS) // options.cpus_per_actor))


def _check_fits(ray, actors: int, options: RayOptions) -> None:
    """Refuse actors that would hold every CPU: decoding could never run, and Ray would wait."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if options.gpus_per_actor == 0 and actors * options.cpus_per_actor + LIGHT_CPUS > cpus:
        raise CardamageError(
            f"{actors} actor(s) x {options.cpus_per_actor} CPU leave less than {LIGHT_CPUS} of "
            f"the cluster's {cpus:g} CPUs to decoding: lower --actors or --cpus-per-actor"
        )


def model_files(predictor: Predictor) -> dict[str, bytes]:
    """What an actor needs to load the model, shipped through Ray's object store: workers on
    other machines need not see the driver's model directory."""
    if predictor.model_dir is None:
        raise CardamageError("--ray needs a trained run or model directory (--model)")
    names = [META_FILE, predictor.engine.filename]
    return {name: (predictor.model_dir / name).read_bytes() for name in names}


def decode(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Read and decode a batch of photos; one that fails keeps its row, with the error."""
    from cardamage.data.images import load_image, reason

    pixels = np.zeros((len(batch["uri"]), size, size, 3), np.uint8)
    errors = []
    for i, (image, uri) in enumerate(zip(batch["image"], batch["uri"], strict=True)):
        try:
            pixels[i] = load_image(read_bytes(str(uri)), size, name=str(image))
            errors.append("")
        except CardamageError as e:
            errors.append(str(e))
        except OSError as e:  # missing, not allowed, unreachable: in `cardamage predict`'s words
            text = os.strerror(e.errno) if e.errno else reason(e)  # pyarrow names the path again
            errors.append(f"cannot read image '{image}': {text}")
    return {"image": batch["image"], "error": np.array(errors, dtype=object), "pixels": pixels}


class Scorer:
    """One model actor: an ONNX Runtime session on the shipped model, kept for every batch;
    ``engine`` is the class of the driver's engine (fp32 or int8), which checked the export."""

    def __init__(self, files: dict[str, bytes], engine: type[OnnxEngine], threads: int) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="cardamage-model-")
        for name, data in files.items():
            (Path(self.folder.name) / name).write_bytes(data)
        self.engine = engine.load(Path(self.folder.name), threads)
        self.widths = {t.name: len(t.labels) for t in ModelMeta.read(Path(self.folder.name)).tasks}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        read = batch["error"] == ""
        scores = self.engine(batch["pixels"][read].astype(np.float32)) if read.any() else {}
        out = {"image": batch["image"], "error": batch["error"]}
        for name, width in self.widths.items():
            full = np.full((len(read), width), np.nan, np.float32)  # NaN: not scored
            if scores:
                full[read] = scores[name]
            out[f"scores:{name}"] = full
        return out


def decide(batch: dict[str, np.ndarray], tasks: list[Task]):
    """Scores -> the rows of `cardamage predict` (thresholds, labels, summary), one per photo."""
    import pyarrow as pa

    read = batch["error"] == ""
    scores = {t.name: batch[f"scores:{t.name}"][read] for t in tasks}
    decided = iter(predictions(tasks, scores) if read.any() else [])
    rows = [
        Row(str(image), prediction=next(decided).to_dict())
        if ok
        else Row(str(image), error=str(error))
        for image, error, ok in zip(batch["image"], batch["error"], read, strict=True)
    ]
    columns = flat_columns(tasks)
    values = list(zip(*(flat_values(tasks, row) for row in rows), strict=True))
    return pa.table(dict(zip(columns, values, strict=True)), schema=row_schema(tasks))


def row_schema(tasks: list[Task]):
    """Typed columns: text for names, errors and decisions, float64 for every label's score."""
    import pyarrow as pa

    text = [pa.field(name, pa.string()) for name in flat_columns(tasks)[: 3 + len(tasks)]]
    return pa.schema(text + [pa.field(name, pa.float64()) for name in score_columns(tasks)])


def _check_empty(out: str) -> None:
    """Ray adds files to a folder: one that holds some already would mix two runs' rows."""
    import pyarrow.fs as pafs

    fs, path = filesystem(out)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise CardamageError(f"--output {out} is a file: --ray writes a folder of files")
    if info.type == pafs.FileType.Directory and fs.get_file_info(pafs.FileSelector(path)):
        raise CardamageError(f"--output {out} is not empty: give a new folder")


def count_rows(out: str, fmt: str) -> tuple[int, int]:
    """(predicted, failed) from the files written: what the output holds, not what was sent."""
    import pyarrow.dataset as pads

    fs, path = filesystem(out)
    table = pads.dataset(path, format=READ_FORMATS[fmt], filesystem=fs).to_table(columns=["error"])
    failed = sum(1 for error in table["error"].to_pylist() if error)  # csv reads null as ""
    return table.num_rows - failed, failed
