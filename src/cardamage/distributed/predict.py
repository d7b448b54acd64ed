"""`cardamage predict --ray`: photos scored as Ray Data stages, rows written by Ray.

names -> model (a pool of actors, each holding one ONNX Runtime session of backbone and heads;
each reads its batches' photos from any filesystem, decodes them to the model's size, checks
their quality, scores them, runs the distribution check on the features it outputs and decides:
calibration, thresholds, labels, the trust verdict, summary, the rows of `cardamage predict`) ->
Parquet, CSV or JSONL files. One stage keeps decoded pixels and scores out of Ray's object
store: only names go in, only rows come out.
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

from cardamage.config import QualityRules
from cardamage.distributed.cluster import connect
from cardamage.distributed.sources import Photo, absolute, filesystem, find_photos, read_bytes
from cardamage.errors import CardamageError
from cardamage.inference.batch import Row, flat_columns, flat_values, score_columns
from cardamage.inference.engines import OnnxEngine
from cardamage.inference.predictor import Predictor, predictions
from cardamage.model.metadata import FEATURES, META_FILE, ModelMeta
from cardamage.tasks import Task
from cardamage.trust.calibrators import calibrate
from cardamage.trust.distribution import DISTRIBUTION_FILE, DistributionCheck, InDistribution
from cardamage.trust.quality import QualityCheck, check_quality
from cardamage.trust.review import REVIEW_FILE, ReviewPolicy
from cardamage.trust.verdict import Trust

#: Output formats and the Dataset writer of each.
WRITERS = {"parquet": "write_parquet", "csv": "write_csv", "jsonl": "write_json"}
#: Readers of the same formats, for the summary's count of error rows.
READ_FORMATS = {"parquet": "parquet", "csv": "csv", "jsonl": "json"}
#: CPUs a write task reserves: light work next to the model's, and a whole
#: CPU each would leave none to the model's actors on a small machine (or, for the writes that
#: Ray gives one CPU by default, hold every row back until the actors are done).
LIGHT_CPUS = 0.25
#: Photos per input block: enough blocks that every actor has work.
PHOTOS_PER_BLOCK = 128
#: Rows an output file holds at least (the last one excepted): readers want few large files,
#: and each write task may start a worker process of its own (about 1.5 s of CPU here: once the
#: actors fill Ray's pool it keeps no idle worker), a cost per file, not per photo.
ROWS_PER_FILE = 10_000


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a Ray on this machine
    actors: int | None = None  # None: one per CPU (or GPU) of the cluster
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    batch_size: int = 32


@dataclass(frozen=True)
class Recipe:
    """What the actors take from the driver's predictor besides the model files: the input
    size, the quality rules, the tasks with the user's thresholds, the calibration, the
    typicality the distribution check needs (None: the model has none) and the review policy."""

    size: int
    quality: QualityRules
    tasks: list[Task]
    calibration: dict
    threshold: float | None
    review: ReviewPolicy

    @classmethod
    def of(cls, predictor: Predictor) -> Recipe:
        threshold = predictor.distribution.threshold if predictor.distribution else None
        return cls(
            predictor.image_size,
            predictor.quality,
            predictor.tasks,
            predictor.meta.calibration,
            threshold,
            predictor.review,
        )


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
    write = getattr(dataset, WRITERS[fmt])
    write(out, min_rows_per_file=ROWS_PER_FILE, ray_remote_args={"num_cpus": LIGHT_CPUS})
    predicted, failed = count_rows(out, fmt)
    return Outcome(predicted, failed, time.monotonic() - started)


def pipeline(ray, predictor: Predictor, photos: list[Photo], options: RayOptions):
    """The Dataset of output rows (lazy: it runs when written)."""
    model = model_files(predictor)
    actors = options.actors or default_actors(ray, options)
    _check_fits(ray, actors, options)
    threads = max(1, int(options.cpus_per_actor))
    return photo_dataset(ray, photos).map_batches(
        Scorer,
        fn_constructor_args=(model, type(predictor.engine), threads, Recipe.of(predictor)),
        batch_size=options.batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor or None,
    )  # Ray Data restarts an actor that dies and runs its unfinished batches again


def photo_dataset(ray, photos: list[Photo]):
    """The photos as blocks of PHOTOS_PER_BLOCK rows (image, uri)."""
    import pyarrow as pa

    table = pa.table({"image": [p.image for p in photos], "uri": [p.uri for p in photos]})
    blocks = math.ceil(len(photos) / PHOTOS_PER_BLOCK)
    return ray.data.from_arrow(
        [table.slice(i * PHOTOS_PER_BLOCK, PHOTOS_PER_BLOCK) for i in range(blocks)]
    )


def default_actors(ray, options: RayOptions) -> int:
    """One actor per GPU share, else per CPU share left once the writes have theirs."""
    resources = ray.cluster_resources()
    if options.gpus_per_actor:
        return max(1, int(resources.get("GPU", 0) / options.gpus_per_actor))
    return max(1, int((resources.get("CPU", 1) - LIGHT_CPUS) // options.cpus_per_actor))


def _check_fits(ray, actors: int, options: RayOptions) -> None:
    """Refuse actors that would hold every CPU: the writes could never run, and Ray would wait."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if options.gpus_per_actor == 0 and actors * options.cpus_per_actor + LIGHT_CPUS > cpus:
        raise CardamageError(
            f"{actors} actor(s) x {options.cpus_per_actor} CPU leave less than {LIGHT_CPUS} of "
            f"the cluster's {cpus:g} CPUs to the writes: lower --actors or --cpus-per-actor"
        )


def model_files(predictor: Predictor) -> dict[str, bytes]:
    """What an actor needs to load the model, shipped through Ray's object store: workers on
    other machines need not see the driver's model directory."""
    if predictor.model_dir is None:
        raise CardamageError("--ray needs a trained run or model directory (--model)")
    names = [META_FILE, predictor.engine.filename, DISTRIBUTION_FILE, REVIEW_FILE]
    folder = predictor.model_dir
    return {name: (folder / name).read_bytes() for name in names if (folder / name).exists()}


def decode(batch: dict[str, np.ndarray], size: int, rules: QualityRules) -> dict:
    """Read and decode a batch of photos and check their quality (a list of checks per
    photo); one that fails keeps its row, with the error."""
    from cardamage.data.images import load_photo, reason

    pixels = np.zeros((len(batch["uri"]), size, size, 3), np.uint8)
    errors: list[str] = []
    quality: list[list[QualityCheck]] = []
    for i, (image, uri) in enumerate(zip(batch["image"], batch["uri"], strict=True)):
        quality.append([])
        try:
            photo = load_photo(read_bytes(str(uri)), size, name=str(image))
            pixels[i] = photo.pixels
            quality[-1] = check_quality(photo, rules)
            errors.append("")
        except CardamageError as e:
            errors.append(str(e))
        except OSError as e:  # missing, not allowed, unreachable: in `cardamage predict`'s words
            text = os.strerror(e.errno) if e.errno else reason(e)  # pyarrow names the path again
            errors.append(f"cannot read image '{image}': {text}")
    return {
        "image": batch["image"],
        "error": np.array(errors, dtype=object),
        "quality": quality,
        "pixels": pixels,
    }


class Scorer:
    """One model actor: turns a batch of names into output rows in one stage (only names go
    in, only rows come out, nothing decoded or scored travels through the object store): it
    decodes the photos, scores them with an ONNX Runtime session on the shipped model, kept for
    every batch, and decides; ``engine`` is the class of the driver's engine (fp32 or int8),
    which checked the export."""

    def __init__(
        self, files: dict[str, bytes], engine: type[OnnxEngine], threads: int, recipe: Recipe
    ) -> None:
        self.recipe = recipe
        self.folder = tempfile.TemporaryDirectory(prefix="cardamage-model-")
        for name, data in files.items():
            (Path(self.folder.name) / name).write_bytes(data)
        self.engine = engine.load(Path(self.folder.name), threads)
        self.widths = {t.name: len(t.labels) for t in ModelMeta.read(Path(self.folder.name)).tasks}
        self.distribution = DistributionCheck.load(Path(self.folder.name))

    def __call__(self, batch: dict[str, np.ndarray]):
        """The batch's rows, as `decide` makes them."""
        r = self.recipe
        scored = self.score(decode(batch, r.size, r.quality))
        return decide(scored, r)

    def score(self, batch: dict) -> dict:
        """Raw scores per task and the photos' typicality (NaN: not scored, or no check)."""
        read = batch["error"] == ""
        scores = self.engine(batch["pixels"][read].astype(np.float32)) if read.any() else {}
        out = {"image": batch["image"], "error": batch["error"], "quality": batch["quality"]}
        typicality = np.full(len(read), np.nan)
        if scores and self.distribution is not None:
            typicality[read] = self.distribution.typicality(scores[FEATURES])
        out["typicality"] = typicality
        for name, width in self.widths.items():
            full = np.full((len(read), width), np.nan, np.float32)  # NaN: not scored
            if scores:
                full[read] = scores[name]
            out[f"scores:{name}"] = full
        return out


def decide(batch: dict, recipe: Recipe):
    """Scores -> the rows of `cardamage predict` (calibration, thresholds, labels, the trust
    verdict, the review, summary), one per photo: what the Predictor does, on the scores and
    typicality."""
    import pyarrow as pa

    tasks, calibration, threshold = recipe.tasks, recipe.calibration, recipe.threshold

    read = batch["error"] == ""
    scores = {
        t.name: calibrate(calibration.get(t.name), batch[f"scores:{t.name}"][read]) for t in tasks
    }
    checks = [quality for quality, ok in zip(batch["quality"], read, strict=True) if ok]
    pairs = zip(checks, batch["typicality"][read], strict=True)
    trusts = [_trust(quality, typicality, threshold) for quality, typicality in pairs]
    decided = iter(predictions(tasks, scores, trusts, recipe.review) if read.any() else [])
    rows = []
    for image, error, ok in zip(batch["image"], batch["error"], read, strict=True):
        if ok:
            prediction = next(decided)
            rows.append(Row(str(image), prediction=prediction.to_dict(), result=prediction))
        else:
            rows.append(Row(str(image), error=str(error)))
    columns = flat_columns(tasks)
    values = list(zip(*(flat_values(tasks, row) for row in rows), strict=True))
    return pa.table(dict(zip(columns, values, strict=True)), schema=row_schema(tasks))


def _trust(checks: list[QualityCheck], typicality: float, threshold: float | None) -> Trust:
    """A photo's verdict from its quality checks and typicality."""
    if threshold is None or np.isnan(typicality):
        return Trust(None, checks)
    seen = InDistribution(float(typicality), threshold, bool(typicality > threshold))
    return Trust(seen, checks)


def row_schema(tasks: list[Task]):
    """Typed columns: text for names, errors, the verdict and decisions, float64 for the
    typicality and every label's score."""
    import pyarrow as pa

    numbers = {"in_distribution", *score_columns(tasks)}
    return pa.schema(
        [pa.field(n, pa.float64() if n in numbers else pa.string()) for n in flat_columns(tasks)]
    )


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
