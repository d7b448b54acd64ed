"""Score a trained model on a labelled set it never saw, and record it with the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardamage.data.manifest import CLAIM_COLUMN, load_manifest
from cardamage.errors import CardamageError
from cardamage.inference.predictor import Predictor
from cardamage.metrics.classification import decide, task_metrics
from cardamage.metrics.selective import reason_kinds, selective_report
from cardamage.reports.claims import claim_evaluation
from cardamage.reports.html_report import write_html_report
from cardamage.runs.rundir import RunDir, write_evaluation


@dataclass
class Evaluation:
    metrics: dict  # per task
    rows: list[dict]  # one per image: truth and prediction per task
    #: coverage and the metrics on the photos the model answered (metrics/selective.py)
    abstention: dict
    #: claim-level metrics when the manifest has a claim column, else None
    claims: dict | None


def evaluate_model(
    predictor: Predictor,
    data: Path,
    image_root: Path,
    batch_size: int = 32,
    claim_labels: Path | None = None,
) -> Evaluation:
    manifest, _ = load_manifest(data, image_root, predictor.tasks)
    if claim_labels is not None and manifest.claims is None:
        raise CardamageError(f"--claim-labels needs a '{CLAIM_COLUMN}' column in {data}")
    predictions = list(predictor.iter_predict(manifest.paths(), batch_size))
    tasks = predictor.tasks
    scores = {t.name: np.stack([p.tasks[t.name].scores for p in predictions]) for t in tasks}
    targets = {t.name: manifest.targets(t) for t in tasks}
    metrics = {t.name: task_metrics(t, targets[t.name], scores[t.name]) for t in tasks}
    abstain = np.array([p.abstain for p in predictions], dtype=bool)
    reasons = [
        kind for p in predictions for kind in reason_kinds([x.message for x in p.trust.problems])
    ]
    review = {
        t.name: np.array([t.name in {c.task for c in p.unsure} for p in predictions], bool)
        for t in tasks
    }
    claims = None
    if manifest.claims is not None:
        claims = claim_evaluation(manifest, tasks, predictions, claim_labels)
    rows = []
    for i, image in enumerate(manifest.images):
        row = {"image": image}
        for task in tasks:
            predicted = decide(task, scores[task.name][i : i + 1])[0]
            chosen = [label for label, on in zip(task.labels, predicted, strict=True) if on]
            row[task.name] = (";".join(manifest.labels[task.name][i]), ";".join(chosen))
        rows.append(row)
    abstention = selective_report(tasks, targets, scores, abstain, reasons, review)
    return Evaluation(metrics, rows, abstention, claims)


def record_evaluation(model: Path, out: Path | None, data: Path, result: Evaluation) -> list[Path]:
    """Write evaluation.json to ``out`` (default, when ``model`` is a finished run: its
    heldout/, or heldout_claims/ for a set of claims, so the photos' held-out figures stay);
    an evaluation in either also rewrites the run's report, which shows both. Returns the
    files written."""
    run = RunDir(model)
    finished = run.summary_file.is_file()
    if out is None and not finished:
        return []
    default = run.heldout_dir if result.claims is None else run.heldout_claims_dir
    written = [
        write_evaluation(out or default, data, result.metrics, result.claims, result.abstention)
    ]
    shown = {run.heldout_dir.resolve(), run.heldout_claims_dir.resolve()}
    if finished and written[0].parent.resolve() in shown:
        written.append(write_html_report(run.path))
    return written


def evaluate_test_split(
    run_dir: Path, batch_size: int = 32
) -> tuple[Evaluation, list[Path]] | None:
    """A finished run's test split (``RUN/test.csv``, set apart before training) scored by
    its final model and recorded as ``cardamage evaluate --model RUN --data RUN/test.csv``
    records it: the evaluation and the files written; None when the data had no test split."""
    run = RunDir(run_dir)
    if not run.test_file.is_file():
        return None
    predictor = Predictor.load(run.path)
    result = evaluate_model(predictor, run.test_file, run.config().image_root, batch_size)
    return result, record_evaluation(run.path, None, run.test_file, result)
