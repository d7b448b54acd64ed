"""The run report: one self-contained HTML page that people can open offline and pass on.

results.txt and summary.json serve machines and diffs; this page serves whoever decides whether
the model is good enough: the numbers, the pictures behind them (confusion matrices, precision-
recall, reliability and training curves) and the photos the model gets most confidently wrong.
Everything is embedded (figures as PNG, photos as small JPEG data URIs, CSS inline, no script),
so the file opens from a mail attachment or a USB stick with no network, and never phones home.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from string import Template

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import precision_recall_curve

from cardamage.config import TrainConfig, load_train_config
from cardamage.data.images import ImageError, load_image
from cardamage.data.manifest import IMAGE_COLUMN, LABEL_SEPARATOR
from cardamage.errors import CardamageError
from cardamage.evaluate.calibration import reliability
from cardamage.evaluate.metrics import decide, headline_name
from cardamage.evaluate.report import LABEL_COLUMNS, fmt
from cardamage.io import atomic_write_text
from cardamage.model.metadata import ModelMeta
from cardamage.tasks import Task

REPORT_FILE = "report.html"
#: Longest side of a gallery photo: enough to see the damage, small enough for a mail attachment.
THUMBNAIL_PX = 160
THUMBNAIL_QUALITY = 80
#: Colours kept in embedded charts: line plots lose nothing visible and shrink about 3x.
CHART_COLOURS = 64
#: Out-of-fold metrics of the summary table: (column title, metrics key); a task kind without
#: the key shows a dash, a column no task has is left out.
_OOF_COLUMNS = (
    ("macro-F1", "macro_f1"),
    ("balanced acc.", "balanced_accuracy"),
    ("mAP", "mAP"),
    ("exact match", "exact_match"),
)
_NOT_APPLICABLE = "\u2014"
_RUN_FILES = ("summary.json", "oof_predictions.csv", "manifest.csv", "config.json")


@dataclass(frozen=True)
class _Run:
    """A finished run directory, read once; ``truth`` and ``scores`` are (n, labels) per task,
    rows in ``images`` order."""

    directory: Path
    summary: dict
    meta: ModelMeta
    config: TrainConfig
    images: tuple[str, ...]
    truth: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    finished: datetime

    @property
    def tasks(self) -> list[Task]:
        return self.meta.tasks


@dataclass(frozen=True)
class _Mistake:
    """One task's wrong out-of-fold answer for one image, as the gallery shows it."""

    task: str
    truth: str
    predicted: str
    detail: str
    #: Probability the model gave its wrong answer: what ranks the gallery.
    confidence: float


def write_html_report(run_dir: Path, *, image_root: Path | None = None, worst: int = 24) -> Path:
    """Write ``run_dir/report.html`` from a finished run directory and return its path.

    ``image_root`` overrides where the photos are looked for (default: the run's config), for a
    run whose data moved; photos that cannot be read show as a placeholder, never an error.
    ``worst`` is how many images the gallery of most confident mistakes shows.
    """
    if worst < 0:
        raise ValueError(f"worst must be 0 or more, got {worst}")
    run = _load_run(Path(run_dir))
    root = image_root if image_root is not None else run.config.image_root
    body = "\n".join(
        [
            _header(run),
            _nav(run.tasks),
            '<main class="wrap">',
            _summary_section(run),
            *(_task_section(run, task) for task in run.tasks),
            _gallery_section(run, root, worst),
            "</main>",
        ]
    )
    title = f"Training report \u2014 {run.directory.resolve().name}"
    page = _PAGE.substitute(title=_e(title), css=_CSS, body=body)
    path = run.directory / REPORT_FILE
    atomic_write_text(path, page)
    return path


# ---------------------------------------------------------------- reading the run directory


def _load_run(directory: Path) -> _Run:
    """Everything the page needs; a missing or malformed file is one CardamageError."""
    missing = [name for name in _RUN_FILES if not (directory / name).is_file()]
    if missing:
        raise CardamageError(f"{directory} is not a finished run: missing {', '.join(missing)}")
    meta = ModelMeta.read(directory / "model")
    try:
        images, scores = _read_oof(directory / "oof_predictions.csv", meta.tasks)
        summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
        return _Run(
            directory=directory,
            summary=summary,
            meta=meta,
            config=load_train_config(directory / "config.json", {}),
            images=images,
            truth=_read_truth(directory / "manifest.csv", meta.tasks, images),
            scores=scores,
            finished=_finished(summary, directory),
        )
    except (KeyError, ValueError, OSError, csv.Error) as e:
        raise CardamageError(f"cannot read run {directory}: {type(e).__name__}: {e}") from None


def _shipped(summary: dict) -> str:
    """Which model the run ships: refitted on all images (the default) or the best fold's."""
    if summary.get("final_model", "best_fold") == "refit":
        return "model refitted on all images"
    return f"model of fold {summary['best_fold']}"


def _finished(summary: dict, directory: Path) -> datetime:
    """When the run ended: recorded in the summary, else the summary file's time."""
    if "finished" in summary:
        return datetime.fromisoformat(summary["finished"])
    return datetime.fromtimestamp((directory / "summary.json").stat().st_mtime)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _read_oof(path: Path, tasks: list[Task]) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Images and per-task score matrices from the ``task:label`` columns crossval writes."""
    rows = _read_csv(path)
    if not rows:
        raise ValueError(f"{path.name} has no rows")
    images = tuple(row[IMAGE_COLUMN] for row in rows)
    scores = {
        t.name: np.array([[float(row[f"{t.name}:{label}"]) for label in t.labels] for row in rows])
        for t in tasks
    }
    return images, scores


def _read_truth(path: Path, tasks: list[Task], images: Sequence[str]) -> dict[str, np.ndarray]:
    """Targets of ``images`` from the run's manifest (tidy format: ``;``-joined labels)."""
    by_image = {row[IMAGE_COLUMN]: row for row in _read_csv(path)}
    return {
        t.name: t.encode(
            [[v for v in by_image[image][t.name].split(LABEL_SEPARATOR) if v] for image in images]
        )
        for t in tasks
    }


# ---------------------------------------------------------------- page sections


def _header(run: _Run) -> str:
    spec, summary = run.meta.spec, run.summary
    width = f" (alpha {spec.alpha:g})" if spec.alpha is not None else ""
    facts = {
        "Data": str(run.config.data.data),
        "Images": str(summary["images"]),
        "Backbone": f"{spec.backbone}{width} at {spec.image_size} px, weights: {spec.weights}",
        "Folds": f"{summary['folds']} ({_shipped(summary)})",
        "Finished": run.finished.strftime("%Y-%m-%d %H:%M"),
    }
    if not all(task.multiclass for task in run.tasks):  # multiclass decisions take no threshold
        tuned = run.config.run.tune_thresholds
        facts["Thresholds"] = "tuned for F1 out of fold" if tuned else "fixed at 0.5"
    if "seconds" in summary:
        facts["Training time"] = _duration(summary["seconds"])
    versions = run.meta.info.get("versions", {})
    meta = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts.items())
    stack = " \u00b7 ".join(f"{k} {v}" for k, v in versions.items())
    return (
        '<header class="top"><div class="wrap">'
        "<h1>Car damage model \u2014 training report</h1>"
        f'<p class="sub">Run <strong>{_e(run.directory.resolve().name)}</strong></p>'
        f'<dl class="meta">{meta}</dl>'
        f'<p class="versions">{_e(stack)}</p>'
        "</div></header>"
    )


def _nav(tasks: list[Task]) -> str:
    links = [
        ("summary", "Summary"),
        *((_anchor(t), t.name) for t in tasks),
        ("mistakes", "Mistakes"),
    ]
    items = "".join(f'<a href="#{_e(a)}">{_e(text)}</a>' for a, text in links)
    return f'<nav class="toc"><div class="wrap">{items}</div></nav>'


def _summary_section(run: _Run) -> str:
    """Per task: the original's headline metric per fold and its mean, then out-of-fold ones."""
    folds, best = run.summary["folds"], run.summary["best_fold"]
    results = [run.summary["tasks"][task.name] for task in run.tasks]
    columns = [c for c in _OOF_COLUMNS if any(c[1] in r["out_of_fold"] for r in results)]
    header = ["Task", "Headline metric", *(f"Fold {i}" for i in range(1, folds + 1)), "Mean"]
    header += [title for title, _ in columns]
    rows = [_summary_row(task, r, columns) for task, r in zip(run.tasks, results, strict=True)]
    groups = [("", 2), ("Headline metric, as the original reported it", folds + 1)]
    groups.append(("Out of fold", len(columns)))
    table = _table(header, rows, groups=groups, highlight=1 + best)
    return _section(
        "summary",
        "Summary",
        f"<p>Highlighted: fold {best}, the best fold; <code>model/</code> holds the "
        f"{_shipped(run.summary)}. "
        "Out-of-fold numbers pool the validation predictions of all folds: the honest estimate "
        "of how the model does on new photos. Macro-F1 weighs every label equally, so rare "
        "damage counts as much as common damage.</p>" + table,
    )


def _summary_row(task: Task, result: dict, columns: list[tuple[str, str]]) -> list[str]:
    oof = result["out_of_fold"]
    return [
        task.name,
        headline_name(task),
        *(fmt(v) for v in result["headline"]["per_fold"]),
        fmt(result["headline"]["mean"]),
        *(fmt(oof[key]) if key in oof else _NOT_APPLICABLE for _, key in columns),
    ]


def _task_section(run: _Run, task: Task) -> str:
    oof = run.summary["tasks"][task.name]["out_of_fold"]
    truth, scores = run.truth[task.name], run.scores[task.name]
    if task.multiclass:
        first = _figure_html(
            _confusion_png(task, oof["confusion_matrix"]),
            f"{task.name}: confusion matrix",
            "Rows: true label; columns: predicted. Colour and percentage: share of the row.",
        )
    else:
        first = _figure_html(
            _pr_png(task, truth, scores, oof["per_label"]),
            f"{task.name}: precision-recall curves",
            "One curve per label; the dot is the label's operating point at its threshold.",
        )
    calibration = reliability(truth, scores, multiclass=task.multiclass)
    second = _figure_html(
        _reliability_png(task, calibration),
        f"{task.name}: reliability diagram",
        f"ECE {calibration['ece']:.3f}: mean gap between score and observed frequency. "
        "Bars on the diagonal: a score of 0.8 is right 80% of the time.",
    )
    body = [
        f"<h3>Per label, out of fold (n = {_e(oof['n'])})</h3>",
        _label_table(task, oof["per_label"]),
        f'<div class="figures">{first}{second}</div>',
        _curves_html(run.directory / "curves", task),
    ]
    kind = f'<span class="kind">{_e(task.kind)}: {_e(", ".join(task.labels))}</span>'
    return _section(_anchor(task), f"{_e(task.name)} {kind}", "\n".join(body))


def _label_table(task: Task, per_label: dict) -> str:
    columns = LABEL_COLUMNS[task.kind]
    rows = [[label, *(fmt(per_label[label][key]) for _, key in columns)] for label in task.labels]
    return _table(["Label", *(title for title, _ in columns)], rows)


def _curves_html(directory: Path, task: Task) -> str:
    """This task's training curves as crossval's ``plot_history`` wrote them, by fold."""
    pattern = re.compile(rf"fold(\d+)_{re.escape(task.name)}_(accuracy|loss)\.png")
    found = sorted(
        (int(m[1]), m[2], path)
        for path in directory.glob("*.png")
        if (m := pattern.fullmatch(path.name))
    )
    if not found:
        return ""
    figures = "".join(
        _figure_html(_chart_uri(path.read_bytes()), f"{task.name} {metric}", f"Fold {fold}")
        for fold, metric, path in found
    )
    return f'<h3>Training curves</h3><div class="figures curves">{figures}</div>'


def _gallery_section(run: _Run, image_root: Path, worst: int) -> str:
    by_image = _mistakes(run).items()
    ranked = sorted(by_image, key=lambda item: -max(m.confidence for m in item[1]))[:worst]
    if not ranked:
        cards = "<p>No wrong out-of-fold predictions.</p>"
    else:
        cards = (
            '<div class="gallery">'
            + "".join(_card(run.images[i], image_root, mistakes) for i, mistakes in ranked)
            + "</div>"
        )
    intro = (
        f"<p>The {len(ranked)} images the model got wrong most confidently, out of fold: "
        "often a labelling mistake, a copy of another photo or a case the data lacks. "
        "Green: the label; red: the prediction.</p>"
    )
    return _section("mistakes", "Most confident mistakes", intro + cards)


def _card(image: str, image_root: Path, found: list[_Mistake]) -> str:
    uri = _thumbnail(image_root / image)
    photo = (
        f'<img src="{uri}" alt="{_e(image)}">'
        if uri
        else '<span class="missing">photo not available</span>'
    )
    lines = "".join(
        f'<div class="err"><div class="task">{_e(m.task)}</div>'
        f'<div class="truth">{_e(m.truth)}</div>'
        f'<div class="pred">{_e(m.predicted)}</div>'
        f'<div class="detail">{_e(m.detail)}</div></div>'
        for m in found
    )
    return (
        f'<article class="shot"><div class="photo">{photo}</div><div class="body">'
        f'<div class="name" title="{_e(image)}">{_e(image)}</div>{lines}</div></article>'
    )


# ---------------------------------------------------------------- mistakes


def _mistakes(run: _Run) -> dict[int, list[_Mistake]]:
    """Image index -> its wrong tasks in task order; images without mistakes left out."""
    found: dict[int, list[_Mistake]] = {}
    for task in run.tasks:
        for i, mistake in _task_mistakes(task, run.truth[task.name], run.scores[task.name]):
            found.setdefault(i, []).append(mistake)
    return found


def _task_mistakes(task: Task, truth: np.ndarray, scores: np.ndarray) -> list[tuple[int, _Mistake]]:
    """Each image's most confident wrong decision of ``task``.

    A wrong decision's confidence is the probability given to the wrong answer: the score of
    a predicted label that is absent, one minus the score of a missed one. Multiclass counts
    only the predicted class (its top score), since a missed true class is the same mistake.
    """
    decided = decide(task, scores)
    present = truth.astype(bool)
    wrong = decided != present
    if task.multiclass:
        wrong &= decided
    confidence = np.where(wrong, np.where(decided, scores, 1.0 - scores), -np.inf)
    worst = confidence.argmax(axis=1)
    return [
        (i, _describe(task, present[i], decided[i], scores[i], int(worst[i]), confidence[i].max()))
        for i in np.flatnonzero(wrong.any(axis=1))
    ]


def _describe(
    task: Task,
    present: np.ndarray,
    decided: np.ndarray,
    scores: np.ndarray,
    j: int,
    confidence: float,
) -> _Mistake:
    """``j`` is the worst wrong label; its score is what the reader needs to judge it."""
    label, score = task.labels[j], float(scores[j])
    if task.multiclass:
        detail = f"score {score:.2f}"
    else:
        verdict, sign = ("flagged", "\u2265") if decided[j] else ("missed", "<")
        detail = f"{label} {verdict}: {score:.2f} {sign} threshold {task.thresholds[j]:.2f}"
    return _Mistake(
        task=task.name,
        truth=_labels_text(task, present),
        predicted=_labels_text(task, decided),
        detail=detail,
        confidence=float(confidence),
    )


def _labels_text(task: Task, on: np.ndarray) -> str:
    return ", ".join(label for label, flag in zip(task.labels, on, strict=True) if flag) or "none"


def _thumbnail(path: Path) -> str | None:
    """Small JPEG data URI of a photo (aspect kept), or None when it cannot be read."""
    try:
        photo = Image.fromarray(load_image(path))
    except ImageError:
        return None
    photo.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return _data_uri("image/jpeg", buffer.getvalue())


# ---------------------------------------------------------------- figures


def _confusion_png(task: Task, matrix: list[list[int]]) -> str:
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(task.labels)
    side = min(2.0 + 0.75 * k, 10.0)
    fig = _figure(side + 0.6, side)
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(counts):
        color = "white" if rates[i, j] > 0.5 else "#1f2937"
        ax.text(j, i, f"{count}\n{rates[i, j]:.0%}", ha="center", va="center", color=color)
    ax.set_xticks(range(k), task.labels, rotation=30, ha="right")
    ax.set_yticks(range(k), task.labels)
    ax.set(xlabel="predicted", ylabel="true", title=f"{task.name}: confusion matrix")
    return _png(fig)


def _pr_png(task: Task, truth: np.ndarray, scores: np.ndarray, per_label: dict) -> str:
    """Labels without a positive have no curve (the table says n/a)."""
    fig = _figure(5.6, 4.2)
    ax = fig.add_subplot()
    for j, label in enumerate(task.labels):
        if not truth[:, j].any():
            continue
        precision, recall, _ = precision_recall_curve(truth[:, j], scores[:, j])
        stats = per_label[label]
        ap = fmt(stats["average_precision"])
        (line,) = ax.step(recall, precision, where="post", label=f"{label} (AP {ap})")
        ax.plot(stats["recall"], stats["precision"], "o", color=line.get_color())
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    ax.set_title(f"{task.name}: precision-recall")
    if ax.get_legend_handles_labels()[0]:  # no label had a positive: nothing to name
        ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def _reliability_png(task: Task, calibration: dict) -> str:
    edges = np.asarray(calibration["edges"])
    widths = np.diff(edges)
    observed = [np.nan if v is None else v for v in calibration["observed"]]
    fig = _figure(5.6, 4.2)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.bar(edges[:-1], observed, widths, align="edge", color="#3b82f6", edgecolor="white")
    top.plot([0, 1], [0, 1], "--", color="#6b7280", label="perfectly calibrated")
    top.set(ylim=(0, 1), ylabel="fraction right" if task.multiclass else "fraction present")
    top.set_title(f"{task.name}: ECE {calibration['ece']:.3f}, MCE {calibration['mce']:.3f}")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], calibration["count"], widths, align="edge", color="#94a3b8")
    xlabel = "top-class score" if task.multiclass else "score (every label)"
    bottom.set(xlim=(0, 1), xlabel=xlabel, ylabel="scores")
    return _png(fig)


def _figure(width: float, height: float) -> Figure:
    # A bare Figure on an Agg canvas: no pyplot state, no display, nothing left open to leak.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    """Chart data URI; the Software tag (a URL) is dropped so the page names no address at all."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return _chart_uri(buffer.getvalue())


def _chart_uri(png: bytes) -> str:
    """PNG data URI of a chart, reduced to a palette: the report stays small enough to mail."""
    with Image.open(io.BytesIO(png)) as chart:
        palette = chart.convert("RGB").quantize(CHART_COLOURS, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return _data_uri("image/png", buffer.getvalue())


# ---------------------------------------------------------------- HTML helpers


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _e(value: object) -> str:
    """Everything from data (names, labels, paths) goes through here: the page stays inert."""
    return html.escape(str(value), quote=True)


def _anchor(task: Task) -> str:
    return f"task-{task.name}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def _section(anchor: str, title_html: str, body: str) -> str:
    return f'<section class="card" id="{_e(anchor)}"><h2>{title_html}</h2>\n{body}\n</section>'


def _figure_html(uri: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    groups: Sequence[tuple[str, int]] = (),
    highlight: int | None = None,
) -> str:
    """An escaped table; ``groups`` (title, span) head column groups, ``highlight`` marks one
    column (an index into ``header``)."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="best">{_e(v)}</{tag}>' if c == highlight else f"<{tag}>{_e(v)}</{tag}>"
            for c, v in enumerate(values)
        )

    top = "".join(f'<th colspan="{span}">{_e(title)}</th>' for title, span in groups)
    head = (f'<tr class="group">{top}</tr>' if groups else "") + f"<tr>{cells('th', header)}</tr>"
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>'


_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
$css
</style>
</head>
<body>
$body
</body>
</html>
""")

_CSS = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2563eb;
  --page: #f3f4f6; --good: #047857; --bad: #b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
.wrap { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header.top { background: #0f172a; color: #f8fafc; padding: 28px 0 18px; }
h1 { margin: 0; font-size: 26px; font-weight: 650; letter-spacing: -0.01em; }
.sub { margin: 4px 0 0; color: #cbd5e1; }
dl.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr));
  gap: 10px; margin: 18px 0 0; }
dl.meta div { background: rgba(255, 255, 255, 0.07); border-radius: 8px; padding: 8px 12px; }
dt { font-size: 11px; text-transform: uppercase; letter-spacing: 0.06em; color: #94a3b8; }
dd { margin: 2px 0 0; font-weight: 600; overflow-wrap: anywhere; }
.versions { margin: 14px 0 0; font-size: 12px; color: #94a3b8; }
nav.toc { background: #fff; border-bottom: 1px solid var(--line); position: sticky; top: 0; }
nav.toc .wrap { display: flex; flex-wrap: wrap; gap: 4px 22px; padding-top: 10px;
  padding-bottom: 10px; }
nav.toc a { color: var(--accent); text-decoration: none; font-weight: 600; font-size: 14px; }
section.card { background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 20px 24px; margin: 24px 0; }
h2 { margin: 0 0 10px; font-size: 21px; }
h3 { margin: 22px 0 8px; font-size: 15px; color: var(--muted); text-transform: uppercase;
  letter-spacing: 0.05em; }
p { margin: 0 0 12px; max-width: 80ch; }
code { background: var(--page); padding: 1px 5px; border-radius: 4px; }
.kind { font-size: 13px; font-weight: 500; color: var(--muted); margin-left: 8px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { padding: 7px 14px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { font-size: 12px; color: var(--muted); font-weight: 600; }
tr.group th { text-align: center; text-transform: uppercase; letter-spacing: 0.05em;
  font-size: 11px; border-bottom: 2px solid var(--line); }
tbody tr:nth-child(even) { background: #f9fafb; }
td:first-child { font-weight: 600; }
.best { background: #dbeafe; }
tbody tr:nth-child(even) .best { background: #cfe0fb; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr));
  gap: 18px; margin-top: 18px; align-items: start; }
.figures.curves { grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); margin-top: 0; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; text-align: center; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 14px; }
.shot { border: 1px solid var(--line); border-radius: 8px; overflow: hidden; background: #fff; }
.photo { height: 160px; background: #111827; display: flex; align-items: center;
  justify-content: center; }
.photo img { width: 100%; height: 100%; object-fit: contain; }
.photo .missing { color: #9ca3af; font-size: 13px; }
.shot .body { padding: 8px 12px 10px; font-size: 13px; }
.name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.err { margin-top: 6px; padding-top: 6px; border-top: 1px dashed var(--line); }
.err .task { font-size: 11px; text-transform: uppercase; letter-spacing: 0.05em;
  color: var(--muted); }
.truth { color: var(--good); }
.truth::before { content: "label: "; color: var(--muted); }
.pred { color: var(--bad); }
.pred::before { content: "predicted: "; color: var(--muted); }
.detail { color: var(--muted); font-size: 12px; }
@media print { nav.toc { display: none; } section.card { break-inside: avoid-page; } }
"""
