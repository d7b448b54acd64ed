"""Score a trained model on a labelled set it never saw, and record it with the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cardamage.data.manifest import load_manifest
from cardamage.evaluate.html_report import write_html_report
from cardamage.evaluate.metrics import decide, task_metrics
from cardamage.evaluate.selective import reason_kinds, selective_report
from cardamage.inference.predictor import Predictor
from cardamage.train.rundir import RunDir, write_evaluation


def evaluate_model(
    predictor: Predictor, data: Path, image_root: Path, batch_size: int = 32
) -> tuple[dict, list[dict], dict]:
    """Return (metrics per task, one row per image with truth and prediction, the abstention
    report: coverage and the metrics on the photos it answered)."""
    manifest, _ = load_manifest(data, image_root, predictor.tasks)
    parts: dict[str, list[np.ndarray]] = {t.name: [] for t in predictor.tasks}
    abstain, reasons = [], []
    for prediction in predictor.iter_predict(manifest.paths(), batch_size):
        for name, task_prediction in prediction.tasks.items():
            parts[name].append(task_prediction.scores)
        abstain.append(prediction.abstain)
        reasons.extend(reason_kinds(prediction.trust.problems))
    scores = {name: np.stack(values) for name, values in parts.items()}
    tasks = predictor.tasks
    targets = {t.name: manifest.targets(t) for t in tasks}
    metrics = {t.name: task_metrics(t, targets[t.name], scores[t.name]) for t in tasks}
    selective = selective_report(tasks, targets, scores, np.array(abstain), reasons)
    rows = []
    for i, image in enumerate(manifest.images):
        row = {"image": image}
        for task in tasks:
            predicted = decide(task, scores[task.name][i : i + 1])[0]
            chosen = [label for label, on in zip(task.labels, predicted, strict=True) if on]
            row[task.name] = (";".join(manifest.labels[task.name][i]), ";".join(chosen))
        rows.append(row)
    return metrics, rows, selective


def record_evaluation(
    model: Path, out: Path | None, data: Path, metrics: dict, abstention: dict | None = None
) -> list[Path]:
    """Write evaluation.json to ``out`` (default: the run's heldout/ when ``model`` is a
    finished run); an evaluation in the run's heldout/ also rewrites its report, which shows
    it. Returns the files written."""
    run = RunDir(model)
    finished = run.summary_file.is_file()
    if out is None and not finished:
        return []
    written = [write_evaluation(out or run.heldout_dir, data, metrics, abstention)]
    if finished and written[0].parent.resolve() == run.heldout_dir.resolve():
        written.append(write_html_report(run.path))
    return written
