"""One fold of cross-validation: what every fold trains from, training a model, a fold's files.

A fold is finished when its metrics.json exists (written last), so an interrupted or killed run
resumes from the last finished fold (`cardamage train --resume RUN`).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cardamage.config import TrainConfig
from cardamage.data.manifest import Manifest
from cardamage.metrics.classification import task_metrics
from cardamage.metrics.results import plot_history
from cardamage.model.backbones import Backbone
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import ModelBundle, MultiTaskClassifier, build_model
from cardamage.runs.rundir import FoldFiles, RunDir
from cardamage.tasks import Task
from cardamage.train import runtime
from cardamage.train.activations import (
    Activations,
    cached_activations,
    fill_from_activations,
)
from cardamage.train.features import (
    Extractor,
    FeatureRequest,
    Fill,
    RemoteFill,
    cached_features,
    default_cache_dir,
)
from cardamage.train.pixels import PixelAugment, cached_pixels, cached_size
from cardamage.train.review_scores import mean_over_views
from cardamage.train.trainer import FoldData, HeadTrainer, fine_tune, tuned_top


@dataclass
class FoldResult:
    index: int
    metrics: dict[str, dict]
    scores: dict[str, np.ndarray]  # validation scores per task
    view_scores: dict[str, np.ndarray]  # the same averaged over every cached view
    schedule: dict  # epochs early stopping chose: {"heads": [...], "fine_tune": n | None}
    model_dir: Path


class Inputs:
    """What every fold trains from: targets, image paths, (computed once) cached features and
    the heads trainer, which compiles once for all folds."""

    def __init__(
        self,
        cfg: TrainConfig,
        tasks: list[Task],
        manifest: Manifest,
        remote: RemoteFill | None = None,
    ) -> None:
        self.cfg, self.tasks, self.remote = cfg, tasks, remote
        self.heads = HeadTrainer(tasks, cfg)
        self.paths = manifest.paths()
        self.targets = {t.name: manifest.targets(t) for t in tasks}
        self._features: np.ndarray | None = None
        self._weights: list[np.ndarray] | None = None

    @property
    def features(self) -> np.ndarray:
        """Every image's cached features, (views, n, ...): view 0 the photo as it is."""
        if self._features is None:
            self._extract()
        return self._features

    @property
    def clean_features(self) -> np.ndarray:
        return self.features[0]

    @functools.cached_property
    def pixels(self) -> np.ndarray | None:
        """Every photo decoded once for fine-tuning (None without it), shared by every fold."""
        cfg = self.cfg
        if not cfg.fine_tune.layers:
            return None
        side = cached_size(cfg.model.image_size, cfg.fine_tune.crop)
        return cached_pixels(self.paths, side, cfg.run.cache_dir or default_cache_dir())

    @functools.cached_property
    def activations(self) -> Activations | None:
        """What enters the tuned layers, for every photo and view, where they are computed once
        (``fine_tune.cached_views``; the backbone has a cut below them), else None."""
        cfg, recipe = self.cfg, self.cfg.fine_tune
        if not (recipe.layers and recipe.cached_views):
            return None
        backbone = self._backbone()
        cut = backbone.tuned_cut(recipe.layers)
        if cut is None:
            return None
        request = FeatureRequest(
            model_spec(cfg),
            self.paths,
            cfg.data.augment,
            1 + recipe.cached_views,
            cfg.run.seed,
            cut,
            recipe.crop,
        )
        augment = PixelAugment.from_config(cfg.model.image_size, cfg.data.augment)
        cache = cfg.run.cache_dir or default_cache_dir()
        return cached_activations(backbone.split(cut)[0], request, self.pixels, augment, cache)

    def fold(self, train: np.ndarray, val: np.ndarray) -> FoldData:
        return FoldData(
            self.features, self.targets, self.paths, train, val, self.pixels, self.activations
        )

    @property
    def backbone_weights(self) -> list[np.ndarray]:
        """The weights every fold starts from and the caches came from (random ones included)."""
        if self._weights is None:
            runtime.set_seed(self.cfg.run.seed)
            self._weights = self._built_backbone().get_weights()
        return self._weights

    def _backbone(self) -> Backbone:
        """The backbone the model spec builds, with the run's initial weights."""
        backbone = self._built_backbone()
        backbone.set_weights(self.backbone_weights)
        return backbone

    def _built_backbone(self) -> Backbone:
        return build_model(model_spec(self.cfg), self.tasks[:1]).branch_backbones[0]

    def _extract(self) -> None:
        """The pooled features (the activations entering the top stage for tune_top). Where
        fine-tuning caches activations, the layers above them make the features of the first
        ``data.views`` views: no photo decoded and no layer below run again."""
        cfg, activations = self.cfg, self.activations
        extractor = self._backbone()
        layer, crop, fill = None, None, self._remote_fill()
        if cfg.tune_top.enabled:
            layer = extractor.top_starts
            extractor, _ = extractor.split()
        elif activations is not None and cfg.data.views <= len(activations.values):
            extractor = extractor.split(activations.cut)[1]
            crop = cfg.fine_tune.crop
            fill = functools.partial(fill_from_activations, extractor, activations.values)
        cache = cfg.run.cache_dir or default_cache_dir()
        request = FeatureRequest(
            model_spec(cfg),
            self.paths,
            cfg.data.augment,
            cfg.data.views,
            cfg.run.seed,
            layer,
            crop,
        )
        self._features = cached_features(extractor, request, cache, fill=fill)

    def _remote_fill(self) -> Fill | None:
        """The features computed elsewhere (``remote``: on Ray for `train --ray`), else None."""
        if self.remote is None:
            return None
        extractor = Extractor(
            model_spec(self.cfg),
            self.tasks[:1],
            self._weights,
            self.cfg.tune_top.enabled,
            keras.mixed_precision.global_policy().name,
        )
        return self.remote(extractor)


def model_spec(cfg: TrainConfig) -> ModelSpec:
    return ModelSpec(**cfg.model.model_dump())  # the model section is ModelSpec's fields


def predict_images(model: keras.Model, paths: list[Path], batch_size: int) -> dict[str, np.ndarray]:
    from cardamage.data.pipeline import iter_image_batches

    return _predict(model, iter_image_batches(paths, model.input_shape[1], batch_size))


def predict_activations(
    model: keras.Model, activations: np.ndarray, rows: np.ndarray, batch_size: int
) -> dict[str, np.ndarray]:
    """An ``above`` model's outputs for ``rows`` of one view's cached activations."""
    batches = (
        np.asarray(activations[rows[start : start + batch_size]])
        for start in range(0, len(rows), batch_size)
    )
    return _predict(model, batches)


def _predict(model: keras.Model, batches: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Batch by batch, so that memory stays bounded on large data sets."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for name, value in model.predict_on_batch(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def tuned_outputs(
    model: MultiTaskClassifier,
    activations: Activations | None,
    paths: Sequence[Path],
    rows: np.ndarray,
    batch_size: int,
    features: bool = False,
) -> dict[str, np.ndarray]:
    """A tuned model's outputs for ``rows`` (with ``features``, its pooled features too): from
    the photos' cached activations where it trained on them (the model's own computation from
    view 0, the photo as it is, at a fraction of the cost), else from the photos (also with flip
    TTA, which sees the mirrored photo too)."""
    if activations is None or model.mirror is not None:
        served = model.with_features() if features else model
        return predict_images(served, [paths[i] for i in rows], batch_size)
    above = model.above(activations.cut, features)
    return predict_activations(above, activations.values[0], rows, batch_size)


def train_model(
    inputs: Inputs, data: FoldData, log_dir: Path, seed: int, schedule: dict | None = None
) -> tuple[keras.Model, dict[str, list[float]], dict, dict[str, np.ndarray] | None]:
    """Heads on cached features, then optional fine-tuning. With ``schedule`` and no validation
    images it trains for the given epochs. Returns (model, history, schedule, val scores)."""
    cfg, tasks = inputs.cfg, inputs.tasks
    runtime.set_seed(seed)
    with runtime.distribution_scope():
        model = build_model(model_spec(cfg), tasks)
        backbones, heads = model.branch_backbones, model.branch_heads
        for backbone in backbones:
            backbone.set_weights(inputs.backbone_weights)
        if cfg.tune_top.enabled:
            pretrained = cfg.model.weights != "none"
            heads = [tuned_top(b, h, pretrained) for b, h in model.stacks]
        history, head_epochs = inputs.heads.fit(
            heads, data, log_dir, _head_epochs(cfg, schedule, len(heads))
        )
        done = {"heads": head_epochs, "fine_tune": None}
        if cfg.fine_tune.layers:
            ft_history, done["fine_tune"] = fine_tune(
                model,
                backbones,
                tasks,
                data,
                cfg,
                log_dir,
                seed,
                schedule and schedule["fine_tune"],
            )
            for key, values in ft_history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
        if not len(data.val):
            return model, history, done, None
        if cfg.fine_tune.layers:
            scores = tuned_outputs(
                model, data.activations, data.paths, data.val, cfg.heads.batch_size
            )
        else:
            scores = inputs.heads.predict(np.asarray(data.features[0, data.val]))
    return model, history, done, scores


def _head_epochs(cfg: TrainConfig, schedule: dict | None, n_heads: int) -> list[int] | None:
    """The head phase's epochs per heads model: before fine-tuning its short warm-up, for a
    refit the folds' choice, else early stopping's."""
    if cfg.fine_tune.layers:
        return [cfg.fine_tune.warmup_epochs] * n_heads
    return schedule["heads"] if schedule else None


def train_fold(index: int, inputs: Inputs, train: np.ndarray, val: np.ndarray) -> FoldResult:
    cfg, tasks = inputs.cfg, inputs.tasks
    run = RunDir(cfg.run.out)
    fold_dir = run.fold_dir(index)
    shutil.rmtree(fold_dir, ignore_errors=True)
    data = inputs.fold(train, val)
    model, history, schedule, scores = train_model(inputs, data, fold_dir, cfg.run.seed + index)
    metrics = {t.name: task_metrics(t, inputs.targets[t.name][val], scores[t.name]) for t in tasks}
    ModelBundle(model, model_spec(cfg), tasks, {"fold": index}).save(run.fold_model_dir(index))
    plot_history(history, functools.partial(run.curve_file, index))
    views = view_scores(inputs, data, scores)
    run.write_fold(index, FoldFiles(metrics, scores, schedule, views))
    return FoldResult(index, metrics, scores, views, schedule, run.fold_model_dir(index))


def view_scores(
    inputs: Inputs, data: FoldData, scores: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The heads' validation scores averaged over every cached view (what label review ranks
    by); after fine-tuning the cached views are no longer the model's inputs: ``scores``."""
    if inputs.cfg.fine_tune.layers or len(data.features) == 1:
        return scores
    return mean_over_views(inputs.heads.predict, data.features, data.val)


def finished_fold(index: int, run: RunDir) -> FoldResult | None:
    """A fold finished before an interruption, or None (a half-written fold is cleared)."""
    files = run.finished_fold(index)
    if files is None:
        return None
    return FoldResult(
        index,
        files.metrics,
        files.scores,
        files.view_scores,
        files.schedule,
        run.fold_model_dir(index),
    )


def fresh_session(cfg: TrainConfig) -> None:
    """Keras' global state reset (layer names start over, the precision policy kept) before a
    model is built. Garbage is collected at once only after fine-tuning, whose models hold a
    trained backbone and its optimizer state on the device: a collection takes half a second,
    and after the head phase Python's collector frees the previous fold's frozen model soon
    enough on its own."""
    keras.backend.clear_session(free_memory=bool(cfg.fine_tune.layers))
    runtime.configure_precision(cfg.run.mixed_precision)  # the reset dropped the dtype policy
