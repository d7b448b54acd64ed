"""Human-readable results: results.txt, training-curve PNGs and the summary JSON.

results.txt opens with what the original project printed (per-fold headline accuracy, mean,
best fold) so old and new runs compare at a glance, then the honest metrics. Tables are plain,
aligned text without trailing spaces, readable in a terminal and in a diff.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cardamage.io import atomic_path, atomic_write_json, atomic_write_text
from cardamage.metrics.classification import headline, headline_name
from cardamage.tasks import Task, TaskKind

#: (column title, metrics key) of each task kind's per-fold table.
_FOLD_COLUMNS = {
    TaskKind.MULTICLASS: (
        ("accuracy", "accuracy"),
        ("balanced accuracy", "balanced_accuracy"),
        ("macro-F1", "macro_f1"),
    ),
    TaskKind.MULTILABEL: (
        ("binary accuracy", "binary_accuracy"),
        ("macro-F1", "macro_f1"),
        ("micro-F1", "micro_f1"),
        ("mAP", "mAP"),
        ("exact match", "exact_match"),
    ),
}
_CLASS_COLUMNS = (
    ("precision", "precision"),
    ("recall", "recall"),
    ("F1", "f1"),
    ("support", "support"),
)
#: (column title, per-label key) of each task kind's per-label table.
LABEL_COLUMNS = {
    TaskKind.MULTICLASS: _CLASS_COLUMNS,
    TaskKind.MULTILABEL: (
        *_CLASS_COLUMNS,
        ("AP", "average_precision"),
        ("AUC", "roc_auc"),
        ("threshold", "threshold"),
    ),
}
#: Keras history suffixes a task's accuracy may appear under, depending on how it was compiled.
_ACCURACY_SUFFIXES = ("accuracy", "categorical_accuracy", "binary_accuracy")


def write_results_txt(
    path: Path, task: Task, fold_metrics: list[dict], oof_metrics: dict, best_fold: int
) -> None:
    """Write one task's results.txt. ``best_fold`` is a 0-based index into ``fold_metrics``
    (printed 1-based, as the original's "best iteration")."""
    if not 0 <= best_fold < len(fold_metrics):
        raise ValueError(f"best_fold {best_fold} is not an index into {len(fold_metrics)} folds")
    sections = [
        _original_section(task, fold_metrics, best_fold),
        _fold_section(task, fold_metrics, oof_metrics),
        _label_section(task, oof_metrics),
    ]
    if task.multiclass:
        sections.append(_confusion_section(task, oof_metrics))
    atomic_write_text(path, "\n\n".join("\n".join(lines) for lines in sections) + "\n")


def plot_history(
    history: dict[str, list[float]], path_for: Callable[[str, str], Path]
) -> list[Path]:
    """Write an accuracy and a loss PNG, at ``path_for(task, metric)``, per task found in a
    Keras multi-output history (training blue, validation orange, like the original's); return
    them.

    Curves whose keys are missing are skipped, so a partial history still plots what it has.
    """
    written = []
    for task in _history_tasks(history):
        accuracy_key = next(
            (f"{task}_{s}" for s in _ACCURACY_SUFFIXES if history.get(f"{task}_{s}")), None
        )
        for metric, key in (("accuracy", accuracy_key), ("loss", f"{task}_loss")):
            if key and history.get(key):
                path = path_for(task, metric)
                _plot_curves(history[key], history.get(f"val_{key}"), task, metric, path)
                written.append(path)
    return written


def write_summary_json(path: Path, summary: dict) -> None:
    """Atomic, indented JSON of ``summary`` after converting numpy types to Python ones."""
    atomic_write_json(path, _plain(summary))


def _original_section(task: Task, fold_metrics: list[dict], best_fold: int) -> list[str]:
    title = f"{task.name} ({task.kind}: {', '.join(task.labels)})"
    scores = [headline(task, m) for m in fold_metrics]
    return [
        title,
        "=" * len(title),
        "",
        f"{headline_name(task)} for cross validation splits:",
        "[" + ", ".join(fmt(s) for s in scores) + "]",
        f"on average: {fmt(float(np.mean(scores)))}",
        f"best iteration: {best_fold + 1}",
    ]


def _fold_section(task: Task, fold_metrics: list[dict], oof_metrics: dict) -> list[str]:
    columns = _FOLD_COLUMNS[task.kind]

    def row(name: str, metrics: dict) -> list[str]:
        return [name, fmt(metrics["n"]), *(fmt(metrics[k]) for _, k in columns)]

    means = [fmt(_mean([m[k] for m in fold_metrics])) for _, k in columns]
    rows = [
        *(row(str(i), m) for i, m in enumerate(fold_metrics, 1)),
        ["mean", "", *means],
        row("out-of-fold", oof_metrics),
    ]
    return ["Per fold (validation split)", *_table(["fold", "n", *(t for t, _ in columns)], rows)]


def _label_section(task: Task, oof_metrics: dict) -> list[str]:
    columns = LABEL_COLUMNS[task.kind]
    per_label = oof_metrics["per_label"]
    rows = [[label, *(fmt(per_label[label][k]) for _, k in columns)] for label in task.labels]
    title = f"Per label, out of fold (all folds' validation predictions, n={oof_metrics['n']})"
    return [title, *_table(["label", *(t for t, _ in columns)], rows)]


def _confusion_section(task: Task, oof_metrics: dict) -> list[str]:
    rows = [
        [label, *(str(c) for c in counts)]
        for label, counts in zip(task.labels, oof_metrics["confusion_matrix"], strict=True)
    ]
    return [
        "Confusion matrix, out of fold (rows true, columns predicted)",
        *_table(["true \\ predicted", *task.labels], rows),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """First column left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(len(r[c]) for r in (header, *rows)) for c in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([cells[0].ljust(widths[0]), *rest]).rstrip()

    return [line(header), *(line(r) for r in rows)]


def fmt(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{value:.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    """Mean over the folds where a metric is defined (e.g. mAP needs a positive)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _history_tasks(history: dict[str, list[float]]) -> list[str]:
    """Task names of a multi-output history: ``<task>_loss`` keys (``loss`` is the total)."""
    return [
        k.removesuffix("_loss") for k in history if k.endswith("_loss") and not k.startswith("val_")
    ]


def _plot_curves(
    train: list[float], val: list[float] | None, task: str, metric: str, path: Path
) -> None:
    # A bare Figure on an Agg canvas: no pyplot state, no display, nothing left open to leak.
    fig = Figure(figsize=(5, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(range(1, len(train) + 1), train, color="tab:blue", label="training")
    if val:
        ax.plot(range(1, len(val) + 1), val, color="tab:orange", label="validation")
    ax.set(title=f"{task} {metric}", xlabel="epoch", ylabel=metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def _plain(obj: Any) -> Any:
    """Builtin-only copy: numpy scalars/arrays become Python, paths strings, NaN/inf None
    (JSON has no NaN; Python would write it anyway and strict readers would reject the file)."""
    if isinstance(obj, dict):
        return {_plain(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
