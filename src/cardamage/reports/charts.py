"""The report's charts as embedded PNG data URIs: confusion, precision-recall, reliability and
risk-coverage. Bare matplotlib Figures on an Agg canvas: no pyplot state, no display."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import precision_recall_curve

from cardamage.reports.words import number, task_title
from cardamage.tasks import Task, display_label

#: Colours kept in embedded charts: line plots lose nothing visible and shrink about 3x.
CHART_COLOURS = 64


def confusion_png(task: Task, matrix: list[list[int]], source: str) -> str:
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(task.labels)
    side = min(2.0 + 0.75 * k, 10.0)
    fig = _canvas(side + 0.6, side)
    ax = fig.add_subplot()
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(counts):
        color = "white" if rates[i, j] > 0.5 else "#1f2937"
        ax.text(j, i, f"{count}\n{rates[i, j]:.0%}", ha="center", va="center", color=color)
    names = [display_label(label) for label in task.labels]
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=f"{task_title(task.name)}, {source}")
    return _png(fig)


def pr_png(task: Task, truth: np.ndarray, scores: np.ndarray, per_label: dict) -> str:
    """Labels without a positive have no curve (the table says n/a)."""
    fig = _canvas(5.6, 4.2)
    ax = fig.add_subplot()
    for j, label in enumerate(task.labels):
        if not truth[:, j].any():
            continue
        precision, recall, _ = precision_recall_curve(truth[:, j], scores[:, j])
        stats = per_label[label]
        ap = number(stats["average_precision"])
        (line,) = ax.step(
            recall, precision, where="post", label=f"{display_label(label)} (AP {ap})"
        )
        ax.plot(stats["recall"], stats["precision"], "o", color=line.get_color())
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision")
    ax.set_title(f"{task_title(task.name)}: precision-recall")
    if ax.get_legend_handles_labels()[0]:  # no label had a positive: nothing to name
        ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return _png(fig)


def reliability_png(task: Task, calibration: dict) -> str:
    edges = np.asarray(calibration["edges"])
    widths = np.diff(edges)
    observed = [np.nan if v is None else v for v in calibration["observed"]]
    fig = _canvas(5.6, 4.2)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.bar(edges[:-1], observed, widths, align="edge", color="#3b82f6", edgecolor="white")
    top.plot([0, 1], [0, 1], "--", color="#6b7280", label="perfectly calibrated")
    top.set(ylim=(0, 1), ylabel="fraction right" if task.multiclass else "fraction present")
    top.set_title(
        f"{task_title(task.name)}: calibration error {calibration['ece']:.3f} "
        f"(worst bin {calibration['mce']:.3f})"
    )
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], calibration["count"], widths, align="edge", color="#94a3b8")
    xlabel = "top-class score" if task.multiclass else "score (every label)"
    bottom.set(xlim=(0, 1), xlabel=xlabel, ylabel="scores")
    return _png(fig)


def risk_coverage_png(task: Task, curve: dict, answered: float) -> str:
    fig = _canvas(5.0, 3.4)
    ax = fig.add_subplot()
    ax.plot(curve["coverage"], curve["risk"], marker="o", markersize=3, color="#2563eb")
    ax.axvline(answered, color="#b45309", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, max(0.05, max(curve["risk"]) * 1.15))
    ax.set_xlabel("share of photos answered (most confident first)")
    ax.set_ylabel("error rate")
    ax.set_title(f"{task_title(task.name)}: risk against coverage")
    return _png(fig)


def _canvas(width: float, height: float) -> Figure:
    # A bare Figure on an Agg canvas: no pyplot state, no display, nothing left open to leak.
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    """Chart data URI; the Software tag (a URL) is dropped so the page names no address at all."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return chart_uri(buffer.getvalue())


def chart_uri(png: bytes) -> str:
    """PNG data URI of a chart, reduced to a palette: the report stays small enough to mail."""
    with Image.open(io.BytesIO(png)) as chart:
        palette = chart.convert("RGB").quantize(CHART_COLOURS, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return data_uri("image/png", buffer.getvalue())


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
