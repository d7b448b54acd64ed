"""Tasks: what the model predicts. Their labels travel with every model, report and prediction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path

import numpy as np

from cardamage.errors import CardamageError

#: The original project's placeholder for "no label"; accepted on input, never learned.
NULL_LABEL = "NULL"


class TaskKind(StrEnum):
    MULTICLASS = "multiclass"  # exactly one label per image (softmax)
    MULTILABEL = "multilabel"  # any number of labels per image (sigmoid)


@dataclass(frozen=True)
class Task:
    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    #: Per-label decision thresholds for multilabel tasks (tuned on out-of-fold predictions).
    thresholds: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.labels:
            raise CardamageError(f"task '{self.name}' has no labels")
        if len(set(self.labels)) != len(self.labels):
            raise CardamageError(f"task '{self.name}' lists a label twice: {list(self.labels)}")
        if self.kind == TaskKind.MULTICLASS and len(self.labels) < 2:
            raise CardamageError(f"multiclass task '{self.name}' needs at least 2 labels")
        if not self.thresholds:
            object.__setattr__(self, "thresholds", (0.5,) * len(self.labels))
        if len(self.thresholds) != len(self.labels):
            raise CardamageError(
                f"task '{self.name}' has {len(self.thresholds)} thresholds "
                f"for {len(self.labels)} labels"
            )

    @property
    def multiclass(self) -> bool:
        return self.kind == TaskKind.MULTICLASS

    def with_thresholds(self, thresholds: Sequence[float]) -> Task:
        return Task(self.name, self.kind, self.labels, tuple(float(t) for t in thresholds))

    def unknown(self, values: Iterable[str]) -> list[str]:
        """Labels in ``values`` this task does not know (``NULL`` is always known)."""
        return [v for v in values if v not in self.labels and v != NULL_LABEL]

    def encode(self, rows: Sequence[Sequence[str]]) -> np.ndarray:
        """One-hot (multiclass) or multi-hot (multilabel) targets, columns in label order.

        Fitted on the task's full label list, never on a fold, so columns never shift.
        """
        index = {label: i for i, label in enumerate(self.labels)}
        y = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for r, values in enumerate(rows):
            for v in values:
                if v != NULL_LABEL:
                    y[r, index[v]] = 1.0
        return y

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "labels": list(self.labels),
            "thresholds": list(self.thresholds),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        return cls(
            d["name"], TaskKind(d["kind"]), tuple(d["labels"]), tuple(d.get("thresholds", ()))
        )


def read_label_file(path: Path | str) -> tuple[str, ...]:
    """One label a line; blank lines, ``#`` comments and the ``NULL`` placeholder are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CardamageError(f"cannot read label file {path}: {e}") from None
    labels = [s.strip() for s in text.splitlines()]
    labels = [s for s in labels if s and not s.startswith("#") and s != NULL_LABEL]
    if not labels:
        raise CardamageError(f"label file {path} lists no labels")
    return tuple(labels)


def default_label_file(task_name: str) -> Path:
    return Path(str(resources.files("cardamage") / "labels" / f"{task_name}.txt"))


def default_tasks() -> list[Task]:
    """The original project's three tasks, read from the packaged label files."""
    kinds = {
        "severity": TaskKind.MULTICLASS,
        "location": TaskKind.MULTILABEL,
        "damage_type": TaskKind.MULTILABEL,
    }
    return [
        Task(name, kind, read_label_file(default_label_file(name))) for name, kind in kinds.items()
    ]


#: Labels as a person reads them; data, models and the API keep the label itself.
DISPLAY_NAMES = {"whole": "No damage"}


def display_label(label: str) -> str:
    """The label as shown on the page, in reports and in `predict` output."""
    return DISPLAY_NAMES.get(label, label)
