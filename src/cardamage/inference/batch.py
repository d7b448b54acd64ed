"""Classify folders of thousands of photos: streaming output, one error row per bad file.

Memory stays flat: files are found lazily, predicted in fixed-size batches and written at once.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from cardamage.data.images import load_image
from cardamage.errors import CardamageError
from cardamage.inference.predictor import Predictor, iter_decoded

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class Row:
    path: str
    prediction: dict | None = None
    error: str | None = None


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
        predictions = iter(predictor.predict_pixels(np.stack(decoded)) if decoded else [])
        for path, future in batch:
            error = future.exception()
            if error is None:
                yield Row(str(path), prediction=next(predictions).to_dict())
            elif isinstance(error, CardamageError):
                yield Row(str(path), error=str(error))
            else:
                raise error


class Writer:
    """csv: one flat row per image; jsonl: one object a line; json: one array, streamed."""

    def __init__(self, out: TextIO, fmt: str, predictor: Predictor) -> None:
        self.out, self.fmt, self.count = out, fmt, 0
        self.columns = [f"{t.name}:{label}" for t in predictor.tasks for label in t.labels]
        self.tasks = predictor.tasks
        if fmt == "csv":
            self.csv = csv.writer(out)
            names = [t.name for t in self.tasks]
            self.csv.writerow(["image", "error", *names, *self.columns])
        elif fmt == "json":
            out.write("[\n")

    def write(self, row: Row) -> None:
        if self.fmt == "csv":
            self.csv.writerow(self._flat(row))
        else:
            record = {"image": row.path, "prediction": row.prediction, "error": row.error}
            sep = ",\n" if self.fmt == "json" and self.count else ""
            self.out.write(sep + json.dumps(record) + ("\n" if self.fmt == "jsonl" else ""))
        self.count += 1

    def _flat(self, row: Row) -> list[str]:
        if row.prediction is None:
            return [row.path, row.error or "", *[""] * (len(self.tasks) + len(self.columns))]
        decided = []
        for task in self.tasks:
            p = row.prediction[task.name]
            decided.append(p["label"] if task.multiclass else ";".join(p["labels"]))
        scores = [
            f"{row.prediction[t.name]['scores'][label]:.4f}"
            for t in self.tasks
            for label in t.labels
        ]
        return [row.path, "", *decided, *scores]

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]\n")
        self.out.flush()


def write_explanations(predictor: Predictor, path: Path, out_dir: Path, size: int = 640) -> None:
    """<out_dir>/<image stem>_<task>.png: the photo with the heatmap of where the model looked."""
    import base64

    from PIL import Image

    from cardamage.inference.explain import explain_image
    from cardamage.io import atomic_write_bytes

    photo = Image.fromarray(load_image(path))
    photo.thumbnail((size, size))
    for task, png in explain_image(predictor, np.asarray(photo)).items():
        atomic_write_bytes(out_dir / f"{path.stem}_{task}.png", base64.b64decode(png))


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
    ok = failed = 0
    rows = predict_rows(predictor, find_images(inputs, recursive), batch_size)
    for row in tqdm(rows, desc="predict", unit="img", disable=None):
        writer.write(row)
        ok += row.error is None
        failed += row.error is not None
        if explain_dir is not None and row.error is None:
            write_explanations(predictor, Path(row.path), explain_dir)
    writer.close()
    return ok, failed
