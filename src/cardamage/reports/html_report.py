"""The run report: one self-contained HTML page that people can open offline and pass on.

results.txt and summary.json serve machines and diffs; this page serves whoever decides whether
the model is good enough: a plain headline, the numbers, the held-out evaluation, the pictures
behind them (confusion matrices, precision-recall, reliability and training curves), the photos
the model gets most confidently wrong and, when a review found some, doubtful labels.
Everything is embedded (figures as PNG, photos as small JPEG data URIs, CSS inline, no script),
so the file opens from a mail attachment or a USB stick with no network, and never phones home.

The page is rendered from the Jinja2 templates in ``templates/`` (autoescaped: labels and paths
from data stay inert); this module computes what they show, reading the run through `RunDir`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
import numpy as np

from cardamage.config import TrainConfig
from cardamage.errors import CardamageError
from cardamage.io import atomic_write_text
from cardamage.metrics.calibration import reliability
from cardamage.metrics.label_review import Issue
from cardamage.metrics.results import LABEL_COLUMNS, fmt
from cardamage.metrics.selective import COMPARED
from cardamage.model.metadata import ModelMeta
from cardamage.reports.charts import (
    chart_uri,
    confusion_png,
    pr_png,
    reliability_png,
    risk_coverage_png,
)
from cardamage.reports.gallery import label_issue_cards, mistake_cards
from cardamage.reports.words import label_list, number, percent, task_title
from cardamage.runs.rundir import RunDir
from cardamage.runs.summary import RunSummary
from cardamage.tasks import Task, display_label

#: Metrics of the summary and held-out tables: (column title, metrics key); a task kind without
#: the key shows a dash, a column no task has is left out.
_METRIC_COLUMNS = (
    ("Accuracy", "accuracy"),
    ("Macro-F1", "macro_f1"),
    ("Balanced accuracy", "balanced_accuracy"),
    ("mAP", "mAP"),
    ("Exact match", "exact_match"),
)
#: Plain names of the per-fold headline metric the original reported (Keras' class names).
_HEADLINE_TITLES = {"accuracy": "Accuracy", "binary_accuracy": "Accuracy per label"}
_NOT_APPLICABLE = "\u2014"
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("cardamage.reports", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class _Run:
    """A finished run directory, read once; ``truth`` and ``scores`` are (n, labels) per task,
    rows in ``images`` order."""

    files: RunDir
    summary: RunSummary
    meta: ModelMeta
    config: TrainConfig
    images: tuple[str, ...]
    truth: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    finished: datetime
    heldout: dict | None
    heldout_claims: dict | None
    label_issues: list[Issue] | None

    @property
    def tasks(self) -> list[Task]:
        return self.meta.tasks


def write_html_report(run_dir: Path, *, image_root: Path | None = None, worst: int = 24) -> Path:
    """Write the run's report.html from a finished run directory and return its path.

    ``image_root`` overrides where the photos are looked for (default: the run's config), for a
    run whose data moved; photos that cannot be read show as a placeholder, never an error.
    ``worst`` is how many images the gallery of most confident mistakes shows.
    """
    if worst < 0:
        raise ValueError(f"worst must be 0 or more, got {worst}")
    run = _load_run(RunDir(run_dir))
    root = image_root if image_root is not None else run.config.image_root
    page = _ENV.get_template("report.html.j2").render(
        title=f"Training report \u2014 {run.files.path.resolve().name}",
        run_name=run.files.path.resolve().name,
        facts=_facts(run),
        versions=" \u00b7 ".join(f"{k} {v}" for k, v in run.meta.info.get("versions", {}).items()),
        nav=_nav(run),
        headline=_headline(run),
        summary=_summary(run),
        heldout=_heldout(run),
        claims=_claims(run),
        tasks=[_task(run, task) for task in run.tasks],
        mistakes=mistake_cards(run.tasks, run.images, run.truth, run.scores, root, worst),
        label_issues=label_issue_cards(run.label_issues, root),
    )
    atomic_write_text(run.files.report_file, page)
    return run.files.report_file


# ---------------------------------------------------------------- reading the run directory


def _load_run(files: RunDir) -> _Run:
    """Everything the page needs; a missing or malformed file is one CardamageError."""
    needed = (files.summary_file, files.oof_file, files.manifest_file, files.config_file)
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise CardamageError(f"{files.path} is not a finished run: missing {', '.join(missing)}")
    meta = files.model_meta()
    try:
        images, scores = files.read_oof(meta.tasks)
        summary = files.summary()
        return _Run(
            files=files,
            summary=summary,
            meta=meta,
            config=files.config(),
            images=images,
            truth=files.read_truth(meta.tasks, images),
            scores=scores,
            finished=files.finished_at(summary),
            heldout=files.heldout(),
            heldout_claims=files.heldout_claims(),
            label_issues=files.label_issues(),
        )
    except (KeyError, ValueError, OSError, csv.Error) as e:
        raise CardamageError(f"cannot read run {files.path}: {type(e).__name__}: {e}") from None


def _shipped(summary: RunSummary) -> str:
    """Which model the run ships: refitted on all images (the default), every fold's model
    averaged, or the best fold's."""
    if summary.final_model == "refit":
        return "model refitted on all images"
    if summary.final_model == "fold_ensemble":
        return f"the models of all {summary.folds} folds, averaged"
    return f"model of fold {summary.best_fold}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def _headline(run: _Run) -> str:
    """One plain sentence from the held-out evaluation (else out of fold): per task how often
    it is right and, for a multiclass task, its biggest confusion."""
    if run.heldout:
        metrics = run.heldout["tasks"]
        opening = f"On {next(iter(metrics.values()))['n']} photos it never saw"
    else:
        metrics = {name: t.out_of_fold for name, t in run.summary.tasks.items()}
        opening = (
            f"On {run.summary.images} photos, each scored by a fold model that did not train on it"
        )
    parts = [_task_sentence(task, metrics[task.name]) for task in run.tasks]
    return f"{opening}, " + "; ".join(parts) + "."


def _task_sentence(task: Task, metrics: dict) -> str:
    name = task_title(task.name).lower()
    if not task.multiclass:
        return f"every {name} label is right on {percent(metrics['exact_match'])} of photos"
    said = f"{name} is right {percent(metrics['accuracy'])} of the time"
    counts = np.asarray(metrics["confusion_matrix"], dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    np.fill_diagonal(rates, 0.0)
    i, j = np.unravel_index(rates.argmax(), rates.shape)
    if rates[i, j] == 0:
        return said
    true, predicted = display_label(task.labels[i]), display_label(task.labels[j])
    share = percent(rates[i, j])
    return f"{said}; \u201c{true}\u201d is called \u201c{predicted}\u201d {share} of the time"


# ---------------------------------------------------------------- page sections


def _facts(run: _Run) -> dict[str, str]:
    spec, summary = run.meta.spec, run.summary
    width = f" (alpha {spec.alpha:g})" if spec.alpha is not None else ""
    facts = {
        "Data": str(run.config.data.data),
        "Images": str(summary.images),
        "Backbone": f"{spec.backbone}{width} at {spec.image_size} px, weights: {spec.weights}",
        "Folds": f"{summary.folds} ({_shipped(summary)})",
        "Finished": run.finished.strftime("%Y-%m-%d %H:%M"),
    }
    if not all(task.multiclass for task in run.tasks):  # multiclass decisions take no threshold
        tuned = run.config.run.tune_thresholds
        facts["Thresholds"] = "tuned for F1 out of fold" if tuned else "fixed at 0.5"
    if summary.seconds is not None:
        facts["Training time"] = _duration(summary.seconds)
    return facts


def _nav(run: _Run) -> list[tuple[str, str]]:
    links = [("summary", "Summary")]
    if run.heldout:
        links.append(("heldout", "Held out"))
    if _claim_evaluations(run):
        links.append(("claims", "Claims"))
    links += [(_anchor(t), task_title(t.name)) for t in run.tasks]
    links.append(("mistakes", "Mistakes"))
    if run.label_issues:
        links.append(("label-issues", "Doubtful labels"))
    return links


def _metric_columns(results: Sequence[dict]) -> list[tuple[str, str]]:
    return [c for c in _METRIC_COLUMNS if any(c[1] in r for r in results)]


def _metric_cells(metrics: dict, columns: list[tuple[str, str]]) -> list[str]:
    return [number(metrics[key]) if key in metrics else _NOT_APPLICABLE for _, key in columns]


def _summary(run: _Run) -> dict:
    """Per task: the original's headline metric per fold and its mean, then out-of-fold ones."""
    folds, best = run.summary.folds, run.summary.best_fold
    results = [run.summary.tasks[task.name] for task in run.tasks]
    columns = _metric_columns([r.out_of_fold for r in results])
    header = ["Task", "Measure", *(f"Fold\u00a0{i}" for i in range(1, folds + 1)), "Mean"]
    header += [title for title, _ in columns]
    rows = [
        [
            task_title(task.name),
            _HEADLINE_TITLES[r.headline.metric],
            *(number(v) for v in r.headline.per_fold),
            number(r.headline.mean),
            *_metric_cells(r.out_of_fold, columns),
        ]
        for task, r in zip(run.tasks, results, strict=True)
    ]
    groups = [("", 2), ("Per fold, as the original reported it", folds + 1)]
    groups.append(("Out of fold", len(columns)))
    table = {"header": header, "rows": rows, "groups": groups, "highlight": 1 + best}
    exact_match = any(key == "exact_match" for _, key in columns)
    return {
        "best": best,
        "shipped": _shipped(run.summary),
        "table": table,
        "exact_match": exact_match,
    }


def _heldout(run: _Run) -> dict | None:
    """The evaluation on a labelled set training never saw, beside the out-of-fold estimate."""
    if not run.heldout:
        return None
    evaluated = run.heldout["tasks"]
    oof = {task.name: run.summary.tasks[task.name].out_of_fold for task in run.tasks}
    columns = _metric_columns([*evaluated.values(), *oof.values()])
    rows = []
    for task in run.tasks:
        for source, metrics in (
            ("held out", evaluated[task.name]),
            ("out of fold", oof[task.name]),
        ):
            rows.append(
                [task_title(task.name), source, str(metrics["n"]), *_metric_cells(metrics, columns)]
            )
    figures = [
        _figure(
            confusion_png(task, evaluated[task.name]["confusion_matrix"], "held out"),
            f"{task_title(task.name)}: confusion matrix, held out",
            "Rows: true label; columns: predicted. Colour and percentage: share of the row.",
        )
        for task in run.tasks
        if task.multiclass
    ]
    table = {"header": ["Task", "Scored on", "n", *(t for t, _ in columns)], "rows": rows}
    abstention = run.heldout.get("abstention")
    return {
        "data": run.heldout["data"],
        "table": table,
        "figures": figures,
        "abstention": _abstention(run, abstention) if abstention else None,
    }


def _abstention(run: _Run, report: dict) -> dict:
    """Coverage, all vs answered, and the risk-coverage curve of each multiclass task."""
    reasons = ", ".join(f"{n} {kind}" for kind, n in report["reasons"].items()) or "none"
    rows = []
    for task in run.tasks:
        entry = report["tasks"][task.name]
        for source in ("all", "answered", "without_review"):
            if source in entry:
                cells = [fmt(entry[source][k]) if k in entry[source] else "" for k in COMPARED]
                rows.append([task_title(task.name), source.replace("_", " "), *cells])
    figures = [
        _figure(
            risk_coverage_png(
                task, report["tasks"][task.name]["risk_coverage"], report["coverage"]
            ),
            f"{task_title(task.name)}: risk-coverage curve",
            "Error rate among the photos the model is surest about, for each share of photos "
            "answered; the line marks the share the abstention rule answers.",
        )
        for task in run.tasks
        if task.multiclass
    ]
    return {
        "sentence": (
            f"It answered {report['answered']} of {report['n']} photos "
            f"({report['coverage']:.0%}) and declined the rest as unusable; why: {reasons}. "
            "'without review': the answers confident enough to stand without a person's check."
        ),
        "table": {"header": ["Task", "Photos", *COMPARED], "rows": rows},
        "figures": figures,
    }


def _claim_evaluations(run: _Run) -> list[dict]:
    return [e for e in (run.heldout, run.heldout_claims) if e and "claims" in e]


def _claims(run: _Run) -> list[dict]:
    """Per evaluated set of claims: each task per photo and per claim (the photos of a claim
    combined by the rule every entry point uses), side by side."""
    sections = []
    for evaluation in _claim_evaluations(run):
        claims = evaluation["claims"]
        per_photo, per_claim = evaluation["tasks"], claims["tasks"]
        columns = _metric_columns([*per_photo.values(), *per_claim.values()])
        reviewed = claims.get("review", {})  # absent in evaluations from before claim review
        rows = [
            [task_title(task.name), source, str(metrics["n"]), *_metric_cells(metrics, columns)]
            for task in run.tasks
            for source, metrics in (
                ("per photo", per_photo[task.name]),
                ("per claim", per_claim[task.name]),
                ("per claim, without review", reviewed.get(task.name, {}).get("without_review")),
            )
            if metrics is not None
        ]
        header = ["Task", "Scored", "n", *(t for t, _ in columns)]
        sections.append(
            {
                "data": evaluation["data"],
                "rule": claims["rule"],
                "truth": claims["truth"],
                "n_claims": claims["n_claims"],
                "n_photos": claims["n_photos"],
                "table": {"header": header, "rows": rows},
            }
        )
    return sections


def _task(run: _Run, task: Task) -> dict:
    oof = run.summary.tasks[task.name].out_of_fold
    truth, scores = run.truth[task.name], run.scores[task.name]
    title = task_title(task.name)
    if task.multiclass:
        first = _figure(
            confusion_png(task, oof["confusion_matrix"], "out of fold"),
            f"{title}: confusion matrix",
            "Rows: true label; columns: predicted. Colour and percentage: share of the row.",
        )
    else:
        first = _figure(
            pr_png(task, truth, scores, oof["per_label"]),
            f"{title}: precision-recall curves",
            "One curve per label; the dot is the label's operating point at its threshold.",
        )
    calibration = reliability(truth, scores, multiclass=task.multiclass)
    fitted = run.summary.tasks[task.name].calibration
    after = (
        f" The shipped model calibrates its scores: ECE {fitted.ece_before:.3f} before, "
        f"{fitted.ece_after:.3f} after (fitted on the other folds' photos)."
        if fitted
        else ""
    )
    second = _figure(
        reliability_png(task, calibration),
        f"{title}: reliability diagram",
        f"Calibration error (ECE) {calibration['ece']:.3f}: the mean gap between a score and "
        "how often it is right. Bars on the diagonal: a score of 0.8 is right 80% of the time."
        + after,
    )
    curves = [
        _figure(chart_uri(path.read_bytes()), f"{title} {metric}", f"Fold {fold}")
        for fold, metric, path in run.files.curves(run.summary.folds, task.name)
    ]
    return {
        "anchor": _anchor(task),
        "title": title,
        "kind": f"{task.kind}: {label_list(task.labels)}",
        "n": oof["n"],
        "labels": _label_table(task, oof["per_label"]),
        "figures": [first, second],
        "curves": curves,
    }


def _label_table(task: Task, per_label: dict) -> dict:
    columns = LABEL_COLUMNS[task.kind]
    rows = [
        [display_label(label), *(number(per_label[label][key]) for _, key in columns)]
        for label in task.labels
    ]
    return {"header": ["Label", *(title for title, _ in columns)], "rows": rows}


def _anchor(task: Task) -> str:
    return f"task-{task.name}"


def _figure(uri: str, alt: str, caption: str) -> dict[str, str]:
    return {"uri": uri, "alt": alt, "caption": caption}
