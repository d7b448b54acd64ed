"""The out-of-fold probabilities label review ranks by: the heads' and a second model's.

Confident learning finds a wrong label where an out-of-fold prediction disagrees with it
confidently, so it is only as good as those probabilities. Two cheap changes make them better
than the heads' view-0 scores alone (docs/benchmarks/label-review.md has the figures): every
cached view scored and averaged (test-time augmentation on features that are already there), and
a second, different model, a logistic regression on the same cached features fitted out of fold,
averaged in. The two err differently (a small neural net trained with early stopping vs a convex
fit with an L2 penalty), so where one is soft the other is often sure: the average ranks the
flipped labels higher than either.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cardamage.tasks import Task

#: The L2 penalty per training row (sklearn's C = 1 / (L2 * rows)), fixed rather than tuned:
#: enough to keep a fit of ~1,000 features on a few hundred photos from memorising them.
L2 = 0.01
#: Rows a fold's regression trains on at most (views x photos, subsampled): the fit stays a few
#: seconds a fold on any data set; more rows than this change the ranking little.
MAX_ROWS = 20_000
#: lbfgs iterations: standardised features converge well before this.
MAX_ITER = 300

Splits = Sequence[tuple[np.ndarray, np.ndarray]]


def review_scores(
    heads: dict[str, np.ndarray], linear: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """The probabilities label review ranks by: the heads' and the regression's averaged (the
    heads' alone where there is no regression)."""
    if linear is None:
        return heads
    return {name: (heads[name] + linear[name]) / 2 for name in heads}


def mean_over_views(
    predict: Callable[[np.ndarray], dict[str, np.ndarray]], features: np.ndarray, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """The ``rows``' scores per task averaged over every cached view (``features``: views
    first): test-time augmentation on features already cached, no backbone pass."""
    views = [predict(np.asarray(view[rows])) for view in features]
    return {name: np.mean([v[name] for v in views], axis=0) for name in views[0]}


def linear_scores(
    features: np.ndarray,
    targets: dict[str, np.ndarray],
    tasks: Sequence[Task],
    splits: Splits,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every photo's probabilities from a logistic regression that never saw it: per fold,
    fitted on the training photos' views (features ``(views, n, dim)``), scored on the
    validation photos' views and averaged over them."""
    out = {t.name: np.zeros(targets[t.name].shape, dtype=np.float32) for t in tasks}
    rng = np.random.default_rng(seed)
    for train, val in splits:
        rows = _rows(features.shape[0], np.asarray(train), rng)
        x = features[rows[:, 0], rows[:, 1]]
        for task in tasks:
            y = targets[task.name][rows[:, 1]]
            model = _fit(task, x, y, seed)
            out[task.name][val] = np.mean(
                [_probabilities(task, model, y, view[val]) for view in features], axis=0
            )
    return out


def _rows(views: int, train: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(view, photo) pairs to fit on: every view of every training photo, or MAX_ROWS of them."""
    pairs = np.stack(np.meshgrid(np.arange(views), train, indexing="ij"), axis=-1).reshape(-1, 2)
    if len(pairs) > MAX_ROWS:
        pairs = pairs[np.sort(rng.choice(len(pairs), MAX_ROWS, replace=False))]
    return pairs


def _fit(task: Task, x: np.ndarray, y: np.ndarray, seed: int) -> Pipeline:
    regression = LogisticRegression(C=1 / (L2 * len(x)), max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():  # a constant label or a slow fit: still a usable model
        warnings.simplefilter("ignore", (ConvergenceWarning, UserWarning))
        if task.multiclass:
            classes = y.argmax(axis=1)  # a fold of one class: that class, certain
            model = regression if len(np.unique(classes)) > 1 else DummyClassifier()
            return make_pipeline(StandardScaler(), model).fit(x, classes)
        return make_pipeline(StandardScaler(), OneVsRestClassifier(regression)).fit(
            x, y.astype(np.int8)
        )


def _probabilities(task: Task, model: Pipeline, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n, labels) probabilities; a class no training photo had gets 0 (multiclass)."""
    probs = model.predict_proba(x)
    if not task.multiclass:  # one label is fitted as binary: (P(absent), P(present))
        return probs[:, -y.shape[1] :]
    full = np.zeros((len(x), y.shape[1]), dtype=probs.dtype)
    full[:, model.classes_] = probs
    return full
