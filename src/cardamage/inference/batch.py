"""Classify folders of thousands of photos: streaming output, one error row per bad file.

Memory stays flat: files are found lazily, predicted in fixed-size batches and written at once.
"""

from __future__ import annotations

import base64
import csv
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from cardamage.data.images import load_image
from cardamage.data.manifest import LABEL_SEPARATOR
from cardamage.errors import CardamageError
from cardamage.inference.claims import ClaimAssessment
from cardamage.inference.predictor import Prediction, Predictor, iter_decoded
from cardamage.io import atomic_write_bytes
from cardamage.tasks import Task, display_label

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Row:
    """One output row: a photo (or a claim: ``path`` is then its id) with its prediction as a
    dict, or why it has none; ``result`` keeps the Prediction itself for claims to combine
    (a claim's row: its assessment, for the review verdict); ``extra`` holds the values of the
    writer's extra columns; ``note`` ends the summary (a claim's 'from 1 of 2 photos')."""

    path: str
    prediction: dict | None = None
    error: str | None = None
    result: Prediction | ClaimAssessment | None = None
    extra: dict[str, object] = field(default_factory=dict)
    note: str | None = None


def find_images(inputs: Iterable[Path], recursive: bool) -> Iterator[Path]:
    """Files as given; folders expanded to their image files (sorted, so runs are repeatable)."""
    for path in inputs:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            yield from sorted(
                p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path  # a missing file becomes an error row, not a crash


def predict_rows(predictor: Predictor, paths: Iterable[Path], batch_size: int) -> Iterator[Row]:
    """Rows in input order; decoding of the next batch overlaps the model on this one."""
    for batch in iter_decoded(predictor.decode, paths, batch_size):
        decoded = [future.result() for _, future in batch if future.exception() is None]
        predictions = iter(predictor.predict_photos(decoded) if decoded else [])
        for path, future in batch:
            error = future.exception()
            if error is None:
                result = next(predictions)
                yield Row(str(path), prediction=result.to_dict(), result=result)
            elif isinstance(error, CardamageError):
                yield Row(str(path), error=str(error))
            else:
                raise error


class Writer:
    """csv: one flat row per image; jsonl: one object a line; json: one array, streamed. Each
    also has a ``summary`` for a person (display names, 'No damage' for ``whole``); the other
    columns keep the labels themselves, for programs. ``key`` names the first column (``image``;
    ``claim`` for claims), ``extra`` the columns after the scores (lists ``;``-joined in csv)."""

    def __init__(
        self,
        out: TextIO,
        fmt: str,
        predictor: Predictor,
        key: str = "image",
        extra: Sequence[str] = (),
    ) -> None:
        self.out, self.fmt, self.count, self.key, self.extra = out, fmt, 0, key, tuple(extra)
        self.tasks = predictor.tasks
        if fmt == "csv":
            self.csv = csv.writer(out)
            self.csv.writerow([*flat_columns(self.tasks, key), *self.extra])
        elif fmt == "json":
            out.write("[\n")

    def write(self, row: Row) -> None:
        if self.fmt == "csv":
            extra = [_cell(row.extra.get(name)) for name in self.extra]
            self.csv.writerow(self._flat(row) + extra)
        else:
            record = {self.key: row.path, "prediction": row.prediction, "error": row.error}
            if row.error is None:
                record["trust"] = row.result.trust_dict() if row.result else None
                record["summary"] = row_summary(self.tasks, row)
            record.update({name: row.extra.get(name) for name in self.extra})
            sep = ",\n" if self.fmt == "json" and self.count else ""
            self.out.write(sep + json.dumps(record) + ("\n" if self.fmt == "jsonl" else ""))
        self.count += 1

    def _flat(self, row: Row) -> list[str]:
        return [
            "" if v is None else f"{v:.4f}" if isinstance(v, float) else v
            for v in flat_values(self.tasks, row)
        ]

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]\n")
        self.out.flush()


#: The flat rows' trust columns, before the summary: whether the photo was declined (no
#: answer), why, the figures behind it and its typicality (empty for models trained before the
#: distribution check); whether the answer needs a person's review, and why.
TRUST_COLUMNS = (
    "abstain",
    "abstain_reason",
    "abstain_detail",
    "in_distribution",
    "needs_review",
    "review_reason",
)


def score_columns(tasks: Iterable[Task]) -> list[str]:
    """One column per task and label: ``severity:minor``."""
    return [f"{t.name}:{label}" for t in tasks for label in t.labels]


def flat_columns(tasks: list[Task], key: str = "image") -> list[str]:
    """The columns of a flat row: the csv format's, and the Ray output's."""
    names = [t.name for t in tasks]
    return [key, "error", *TRUST_COLUMNS, "summary", *names, *score_columns(tasks)]


def flat_values(tasks: list[Task], row: Row) -> list[str | float | None]:
    """A row's values in ``flat_columns`` order: None where an error row has no value, the
    trust verdict, the decided labels (multilabel ``;``-joined), then every label's score; a
    declined photo has its verdict and summary only."""
    width = len(flat_columns(tasks))
    if row.error is not None:
        return [row.path, row.error, *[None] * (width - 2)]
    verdict = trust_values(row.result) if row.result else [None] * len(TRUST_COLUMNS)
    head = [row.path, None, *verdict, row_summary(tasks, row)]
    if row.prediction is None:
        return [*head, *[None] * (width - len(head))]
    decided = []
    for task in tasks:
        p = row.prediction[task.name]
        decided.append(p["label"] if task.multiclass else ";".join(p["labels"]))
    scores = [row.prediction[t.name]["scores"][label] for t in tasks for label in t.labels]
    return [*head, *decided, *scores]


def trust_values(prediction: Prediction | ClaimAssessment) -> list[str | float | None]:
    """Declined (yes / no), why, the figures, the typicality; needs review (yes / no), why.
    A claim is never declined whole (with no usable photo it is an error row)."""
    if isinstance(prediction, ClaimAssessment):
        review = [_yes_no(prediction.needs_review), prediction.review_reason]
        return [_yes_no(False), None, None, None, *review]
    seen = prediction.trust.in_distribution
    return [
        _yes_no(prediction.abstain),
        prediction.abstain_reason,
        prediction.trust.detail,
        None if seen is None else seen.typicality,
        _yes_no(prediction.needs_review),
        prediction.review_reason,
    ]


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return LABEL_SEPARATOR.join(map(str, value))
    return str(value)


def describe(task: Task, prediction: dict) -> str:
    """A task's decision as a person reads it: 'No damage 81%', 'dent 64%, paint 55%'; a
    claim's severity with its decision's confidence, the one number shown beside it."""
    chosen = [prediction["label"]] if task.multiclass else prediction["labels"]
    scores = prediction["scores"]
    if "confidence" in prediction:
        scores = {**scores, prediction["label"]: prediction["confidence"]}
    found = ", ".join(f"{display_label(x)} {scores[x]:.0%}" for x in chosen)
    return found or "none found"


def row_summary(tasks: Iterable[Task], row: Row) -> str:
    """A predicted row's summary; a declined photo's says why it has no answer."""
    if row.prediction is None:
        reason = row.result.abstain_reason if isinstance(row.result, Prediction) else None
        return f"not assessed: {reason}"
    text = summary(tasks, row.prediction)
    return f"{text} ({row.note})" if row.note else text


def summary(tasks: Iterable[Task], prediction: dict) -> str:
    """One cell for a person: every task's decision, display names instead of labels."""
    return "; ".join(f"{_title(t.name)}: {describe(t, prediction[t.name])}" for t in tasks)


def _title(name: str) -> str:
    return name.replace("_", " ")


class Explanations:
    """``--explain DIR``: per photo and task, the photo with its heatmap and a caption, named by
    the photo's path under the folder it was found in (under each folder's own name when several
    are given), so photos that share a file name in different folders keep their own; a name
    still taken gets ``-2``, ``-3``. ``index.csv`` says which photo, task and label each shows.
    """

    INDEX = "index.csv"

    def __init__(self, predictor: Predictor, out_dir: Path, inputs: list[Path], size: int = 640):
        self.predictor, self.out_dir, self.size = predictor, out_dir, size
        self.roots = [(root, root.name if len(inputs) > 1 else "") for root in inputs]
        self.taken: set[Path] = set()
        self.written = 0
        out_dir.mkdir(parents=True, exist_ok=True)
        self._index = open(out_dir / self.INDEX, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._index)
        self._csv.writerow(["image", "task", "shows", "heatmap"])

    def write(self, row: Row) -> None:
        """The maps of one predicted photo; a task with nothing found gets an index row only."""
        from PIL import Image

        from cardamage.inference.explain import captioned_png, explain_image, mapped_tasks

        if row.prediction is None:  # declined: no answer to map, only its reason
            for task in self.predictor.tasks:
                self._csv.writerow([row.path, task.name, row_summary([task], row), ""])
            return
        path = Path(row.path)
        photo = Image.fromarray(load_image(path))
        photo.thumbnail((self.size, self.size))
        maps = explain_image(self.predictor, np.asarray(photo), mapped_tasks(row.prediction))
        stem = self._stem(path)
        for task in self.predictor.tasks:
            shows = describe(task, row.prediction[task.name])
            heatmap = ""
            if task.name in maps:
                heatmap = f"{stem}_{task.name}.png"
                caption = f"{_title(task.name)}: {shows}"
                png = captioned_png(base64.b64decode(maps[task.name]), caption)
                atomic_write_bytes(self.out_dir / heatmap, png)
                self.written += 1
            self._csv.writerow([row.path, task.name, shows, heatmap])
        self._index.flush()

    def _stem(self, path: Path) -> str:
        """The photo's path under its folder, without suffix; unique within this run."""
        stem = Path(path.name)
        for root, prefix in self.roots:
            if root.is_dir() and path.is_relative_to(root):
                stem = prefix / path.relative_to(root)
                break
        stem = stem.with_suffix("")
        unique, n = stem, 1
        while unique in self.taken:
            n += 1
            unique = stem.with_name(f"{stem.name}-{n}")
        self.taken.add(unique)
        return unique.as_posix()

    def close(self) -> None:
        self._index.close()

    def report(self) -> str:
        return (
            f"wrote {self.written} heatmap(s) under {self.out_dir}, named by each photo's path; "
            f"{self.out_dir / self.INDEX} lists which photo, task and label each one shows"
        )


def predict_files(
    predictor: Predictor,
    inputs: list[Path],
    recursive: bool,
    fmt: str,
    out: TextIO,
    batch_size: int = 32,
    explain_dir: Path | None = None,
) -> tuple[int, int]:
    """Write predictions for every image found; return (predicted, failed)."""
    writer = Writer(out, fmt, predictor)
    explanations = None if explain_dir is None else Explanations(predictor, explain_dir, inputs)
    ok = failed = 0
    rows = predict_rows(predictor, find_images(inputs, recursive), batch_size)
    try:
        for row in tqdm(rows, desc="predict", unit="img", disable=None):
            writer.write(row)
            ok += row.error is None
            failed += row.error is not None
            if explanations is not None and row.error is None:
                explanations.write(row)
    finally:
        if explanations is not None:
            explanations.close()
            print(explanations.report(), file=sys.stderr)
    writer.close()
    return ok, failed
