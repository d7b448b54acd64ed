"""The report's photo galleries: the most confident mistakes out of fold, and doubtful labels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cardamage.data.images import ImageError, load_image
from cardamage.data.manifest import LABEL_SEPARATOR
from cardamage.metrics.classification import decide
from cardamage.metrics.label_review import Issue
from cardamage.reports.charts import data_uri
from cardamage.reports.words import label_list, task_title
from cardamage.tasks import Task, display_label

#: Longest side of a gallery photo: enough to see the damage, small enough for a mail attachment.
THUMBNAIL_PX = 160
THUMBNAIL_QUALITY = 80
#: Doubtful labels shown per task.
LABEL_ISSUES_SHOWN = 12


@dataclass(frozen=True)
class Mistake:
    """One task's wrong out-of-fold answer for one image, as the gallery shows it."""

    task: str
    truth: str
    predicted: str
    detail: str
    #: Probability the model gave its wrong answer: what ranks the gallery.
    confidence: float


def mistake_cards(
    tasks: Sequence[Task],
    images: Sequence[str],
    truth: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    image_root: Path,
    worst: int,
) -> list[dict]:
    """The images with the most confident wrong answers, most confident first (``truth`` and
    ``scores``: (n, labels) per task, rows in ``images`` order)."""
    by_image = _mistakes(tasks, truth, scores).items()
    ranked = sorted(by_image, key=lambda item: -max(m.confidence for m in item[1]))[:worst]
    return [
        {
            "image": images[i],
            "photo": thumbnail(image_root / images[i]),
            "confidence": max(m.confidence for m in found),
            "mistakes": found,
        }
        for i, found in ranked
    ]


def label_issue_cards(issues: Sequence[Issue] | None, image_root: Path) -> list[dict] | None:
    """Per task, the first LABEL_ISSUES_SHOWN photos of label_issues.csv by rank."""
    if not issues:
        return None
    by_task: dict[str, list[Issue]] = {}
    for issue in issues:
        by_task.setdefault(issue.task, []).append(issue)
    shown = []
    for task, listed in by_task.items():
        top = sorted(listed, key=lambda issue: issue.rank)[:LABEL_ISSUES_SHOWN]
        cards = [
            {
                "image": issue.image,
                "photo": thumbnail(image_root / issue.image),
                "given": display_label(LABEL_SEPARATOR.join(issue.given)),
                "suggested": display_label(LABEL_SEPARATOR.join(issue.suggested)),
                "quality": issue.quality,
            }
            for issue in top
        ]
        shown.append({"title": task_title(task), "cards": cards})
    return shown


def _mistakes(
    tasks: Sequence[Task], truth: dict[str, np.ndarray], scores: dict[str, np.ndarray]
) -> dict[int, list[Mistake]]:
    """Image index -> its wrong tasks in task order; images without mistakes left out."""
    found: dict[int, list[Mistake]] = {}
    for task in tasks:
        for i, mistake in _task_mistakes(task, truth[task.name], scores[task.name]):
            found.setdefault(i, []).append(mistake)
    return found


def _task_mistakes(task: Task, truth: np.ndarray, scores: np.ndarray) -> list[tuple[int, Mistake]]:
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
) -> Mistake:
    """``j`` is the worst wrong label; its score is what the reader needs to judge it."""
    label, score = display_label(task.labels[j]), float(scores[j])
    if task.multiclass:
        detail = f"score {score:.2f}"
    else:
        verdict, sign = ("flagged", "\u2265") if decided[j] else ("missed", "<")
        detail = f"{label} {verdict}: {score:.2f} {sign} threshold {task.thresholds[j]:.2f}"
    return Mistake(
        task=task_title(task.name),
        truth=_on_labels(task, present),
        predicted=_on_labels(task, decided),
        detail=detail,
        confidence=float(confidence),
    )


def _on_labels(task: Task, on: np.ndarray) -> str:
    return label_list([label for label, flag in zip(task.labels, on, strict=True) if flag])


def thumbnail(path: Path) -> str | None:
    """Small JPEG data URI of a photo (aspect kept), or None when it cannot be read."""
    try:
        photo = Image.fromarray(load_image(path))
    except ImageError:
        return None
    photo.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return data_uri("image/jpeg", buffer.getvalue())
