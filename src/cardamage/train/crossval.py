"""k-fold cross-validation: folds, cached features, per-fold models, reports, the final model.

A fold is finished when its metrics.json exists (written last), so an interrupted or killed run
resumes from the last finished fold with `cardamage train --resume RUN`.

The model a run ships is by default refitted on all images for the median number of epochs
early stopping chose in the folds: more data and no optimistic pick of a lucky fold, which is
what generalises to photos nobody has seen. `final_model: best_fold` keeps the original's choice;
`fold_ensemble` ships every fold's heads on the one frozen backbone, their probabilities
averaged. Thresholds are tuned on the folds' out-of-fold scores whatever ships: no photo is out
of sample for a refit model or an ensemble of the folds (README: real photos).
"""

from __future__ import annotations

import functools
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
from sklearn.model_selection import KFold

from cardamage.config import TrainConfig
from cardamage.data.manifest import Manifest
from cardamage.metrics.classification import headline, task_metrics, tune_thresholds
from cardamage.metrics.label_review import find_issues
from cardamage.metrics.results import plot_history, write_results_txt
from cardamage.model.metadata import FEATURES, ModelSpec
from cardamage.model.multitask import ModelBundle, MultiTaskClassifier, build_model, fold_ensemble
from cardamage.runs.rundir import FoldFiles, RunDir
from cardamage.tasks import Task
from cardamage.train import interrupt, runtime
from cardamage.train.features import (
    Extractor,
    FeatureRequest,
    Fill,
    RemoteFill,
    cached_features,
    default_cache_dir,
)
from cardamage.train.pixels import cached_pixels, cached_size
from cardamage.train.review_scores import linear_scores, mean_over_views, review_scores
from cardamage.train.splits import held_out_rows, read_run_data
from cardamage.train.trainer import FoldData, HeadTrainer, fine_tune, tuned_top
from cardamage.trust.calibrators import calibrate
from cardamage.trust.training import calibrate_out_of_fold, fit_distribution, fit_review


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

    def fold(self, train: np.ndarray, val: np.ndarray) -> FoldData:
        return FoldData(self.features, self.targets, self.paths, train, val, self.pixels)

    @property
    def backbone_weights(self) -> list[np.ndarray]:
        """The weights the cached features came from (random ones included)."""
        if self._weights is None:
            self._extract()
        return self._weights

    def _extract(self) -> None:
        cfg = self.cfg
        runtime.set_seed(cfg.run.seed)
        backbone = build_model(model_spec(cfg), self.tasks[:1]).branch_backbones[0]
        self._weights = backbone.get_weights()
        extractor, layer = backbone, None
        if cfg.tune_top.enabled:
            extractor, _ = backbone.split()
            layer = backbone.top_starts
        cache = cfg.run.cache_dir or default_cache_dir()
        request = FeatureRequest(
            model_spec(cfg), self.paths, cfg.data.augment, cfg.data.views, cfg.run.seed, layer
        )
        self._features = cached_features(extractor, request, cache, fill=self._remote_fill())

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

    parts: dict[str, list[np.ndarray]] = {}
    for batch in iter_image_batches(paths, model.input_shape[1], batch_size):
        for name, value in model.predict_on_batch(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


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
            scores = predict_images(model, [data.paths[i] for i in data.val], cfg.heads.batch_size)
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


def fold_score(metrics: dict[str, dict]) -> float:
    """One number to pick the best fold: mean macro-F1 over tasks (not inflated by negatives)."""
    return float(np.mean([m["macro_f1"] for m in metrics.values()]))


def median_schedule(results: list[FoldResult]) -> dict:
    heads = np.median([r.schedule["heads"] for r in results], axis=0)
    fine = [r.schedule["fine_tune"] for r in results if r.schedule["fine_tune"]]
    return {
        "heads": [max(1, round(float(e))) for e in heads],
        "fine_tune": max(1, round(float(np.median(fine)))) if fine else None,
    }


def cross_validate(
    cfg: TrainConfig, resume: bool = False, remote: RemoteFill | None = None
) -> dict:
    """Train k folds (or the ones an interrupted run left), write the run directory.
    ``remote`` computes the cached features elsewhere (`cardamage train --ray` gives Ray's)."""
    started = time.time()
    run = RunDir(cfg.run.out)
    if resume and run.finished:  # before the data is read: it may have moved since
        return _already_finished(run)
    data = read_run_data(cfg)  # test photos set apart: none of them goes past this line
    cfg, tasks, manifest, splits = data.cfg, data.tasks, data.manifest, data.splits
    if resume:
        run.check_same_folds(cfg.data.data, manifest, splits)
        run.sweep_temporaries()
    else:
        run.prepare(cfg.run.overwrite)
        run.record_inputs(cfg, manifest, list(data.problems), splits, runtime.versions())
        run.record_splits(data.test, tasks, data.leaks)
    precision = runtime.configure_precision(cfg.run.mixed_precision)
    first, *more = data.first_lines(run.leakage_file if data.leaks else None)
    print(
        f"cardamage: {first}, {cfg.model.backbone} at "
        f"{cfg.model.image_size} px on {runtime.device_summary()} ({precision})"
    )
    for line in more:
        print(line)
    inputs = Inputs(cfg, tasks, manifest, remote)
    with interrupt.stop_on_ctrl_c():
        results = _train_folds(inputs, splits)
        summary = _finish(inputs, manifest, splits, results)
    summary["test_images"] = len(data.test)
    summary["seconds"] = round(time.time() - started, 1)
    summary["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    run.write_summary(summary)
    return summary


def _already_finished(run: RunDir) -> dict:
    """A finished run resumed: its summary, nothing retrained or rewritten (a refit would
    change the model its reports describe)."""
    summary = run.summary()
    print(f"{run.path} finished at {summary.get('finished', 'an unknown time')}: nothing to resume")
    return summary


def _train_folds(inputs: Inputs, splits: list) -> list[FoldResult]:
    """Every fold's result, training only those not finished yet."""
    cfg, tasks = inputs.cfg, inputs.tasks
    results = []
    for index, (train, val) in enumerate(splits, start=1):
        interrupt.check()
        result = finished_fold(index, RunDir(cfg.run.out))
        if result is not None:
            print(f"fold {index}/{len(splits)}: finished before, kept")
        else:
            _fresh_session(cfg)
            result = train_fold(index, inputs, train, val)
            scores = ", ".join(f"{t.name} {headline(t, result.metrics[t.name]):.3f}" for t in tasks)
            print(f"fold {index}/{len(splits)}: {scores}")
        results.append(result)
    return results


def _fresh_session(cfg: TrainConfig) -> None:
    """Keras' global state reset (layer names start over, the precision policy kept) before a
    model is built. Garbage is collected at once only after fine-tuning, whose models hold a
    trained backbone and its optimizer state on the device: a collection takes half a second,
    and after the head phase Python's collector frees the previous fold's frozen model soon
    enough on its own."""
    keras.backend.clear_session(free_memory=bool(cfg.fine_tune.layers))
    runtime.configure_precision(cfg.run.mixed_precision)  # the reset dropped the dtype policy


def _final_model(
    inputs: Inputs, results: list[FoldResult], best: FoldResult
) -> MultiTaskClassifier:
    if inputs.cfg.run.final_model == "best_fold":
        return ModelBundle.load(best.model_dir).model
    if inputs.cfg.run.final_model == "fold_ensemble":
        print(f"final model: the heads of all {len(results)} folds on one backbone")
        return fold_ensemble([ModelBundle.load(r.model_dir).model for r in results])
    _fresh_session(inputs.cfg)
    everything = np.arange(len(inputs.paths))
    data = inputs.fold(everything, everything[:0])
    print("final model: refit on all images")
    log_dir = RunDir(inputs.cfg.run.out).final_dir
    model, _, _, _ = train_model(
        inputs, data, log_dir, inputs.cfg.run.seed, median_schedule(results)
    )
    return model


def _finish(inputs: Inputs, manifest: Manifest, splits: list, results: list[FoldResult]) -> dict:
    """Tune thresholds out-of-fold, score out-of-fold, write reports, save the final model.

    With a fixed validation split only its val rows have out-of-fold scores: thresholds,
    calibration, the out-of-fold metrics and label review use those alone."""
    cfg = inputs.cfg
    run = RunDir(cfg.run.out)
    held = held_out_rows(splits)
    checked = _checked_rows(held, splits, cfg.run.seed)
    targets = {name: y[held] for name, y in inputs.targets.items()}
    every = out_of_fold(inputs.targets, splits, [r.scores for r in results])
    oof = {name: scores[held] for name, scores in every.items()}
    calibrated = calibrate_out_of_fold(inputs.tasks, targets, oof, checked, cfg.trust)
    scores = calibrated.scores
    tasks = [
        t.with_thresholds(tune_thresholds(targets[t.name], scores[t.name]))
        if cfg.run.tune_thresholds and not t.multiclass
        else t
        for t in inputs.tasks
    ]
    best = max(results, key=lambda r: fold_score(r.metrics))
    oof_metrics = {t.name: task_metrics(t, targets[t.name], scores[t.name]) for t in tasks}
    for task in tasks:
        write_results_txt(
            run.results_file(task.name),
            task,
            [r.metrics[task.name] for r in results],
            oof_metrics[task.name],
            best.index - 1,
        )
    info = {
        "final_model": cfg.run.final_model,
        "fold": best.index if cfg.run.final_model == "best_fold" else None,
        "trained_on": len(manifest),
        "out_of_fold": _compact(oof_metrics),
        "versions": runtime.versions(),
    }
    final = _final_model(inputs, results, best)
    spec = replace(model_spec(cfg), ensemble=final.spec.ensemble)
    ModelBundle(final, spec, tasks, info, calibrated.calibration).save(run.model_dir)
    # a fixed split's density is fitted on train and its reference is val's; the other way
    # round completes the out-of-sample scores the check needs for every photo
    both_ways = splits if len(splits) > 1 else [splits[0], splits[0][::-1]]
    distribution = fit_distribution(_training_features(inputs, final), both_ways, cfg.trust)
    if distribution is not None:
        distribution.save(run.model_dir)
    needs_review = fit_review(tasks, targets, scores, cfg.trust)
    needs_review.save(run.model_dir)
    validated = manifest.subset(held)
    run.write_oof(validated, tasks, oof)
    if cfg.run.label_review != "off":
        review = _review_scores(inputs, results, splits, calibrated.calibration)
        run.write_label_issues(
            find_issues(validated, tasks, {k: v[held] for k, v in review.items()})
        )
    summary = {
        "folds": len(splits),
        "val_split": cfg.data.val_split,
        "images": len(manifest),
        "best_fold": best.index,
        "final_model": cfg.run.final_model,
        "tasks": {t.name: _task_summary(t, results, oof_metrics[t.name]) for t in tasks},
    }
    for name, ece in calibrated.ece.items():
        summary["tasks"][name]["calibration"] = {
            "ece_before": ece["before"],
            "ece_after": ece["after"],
        }
    if distribution is not None:
        summary["distribution"] = distribution.summary()
    summary["review"] = {"thresholds": needs_review.thresholds, **needs_review.chosen_for}
    return summary


def _checked_rows(held: np.ndarray, splits: list, seed: int) -> list:
    """Splits of the held-out rows (positions in ``held``) on which calibration is measured
    honestly: the folds themselves, or halves of a fixed validation split."""
    if len(splits) > 1:
        return splits
    return list(KFold(2, shuffle=True, random_state=seed).split(held))


def out_of_fold(
    targets: dict[str, np.ndarray], splits: list, per_fold: list[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Every photo's scores per task from the fold that held it out (``per_fold``: each fold's
    validation scores, in the order of ``splits``)."""
    oof = {name: np.zeros_like(y) for name, y in targets.items()}
    for scores, (_, val) in zip(per_fold, splits, strict=True):
        for name, value in scores.items():
            oof[name][val] = value
    return oof


def _review_scores(
    inputs: Inputs, results: list[FoldResult], splits: list, calibration: dict
) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities for label review: the heads' averaged over the views, through
    the model's calibration, with a logistic regression's on the cached features (``ensemble``)."""
    views = out_of_fold(inputs.targets, splits, [r.view_scores for r in results])
    heads = {name: calibrate(calibration.get(name), scores) for name, scores in views.items()}
    if inputs.cfg.run.label_review != "ensemble":
        return review_scores(heads, None)
    features = inputs.features
    if features.ndim != 3:  # feature maps (tune_top): no vector to fit a regression on
        print("label review: the heads' scores alone (the cached features are feature maps)")
        return review_scores(heads, None)
    print("label review: a logistic regression on the cached features, out of fold")
    linear = linear_scores(features, inputs.targets, inputs.tasks, splits, inputs.cfg.run.seed)
    return review_scores(heads, linear)


def _training_features(inputs: Inputs, final: keras.Model) -> np.ndarray:
    """The shipped model's features of every training image: the cached ones while the backbone
    stays as it was pretrained, else one pass of the tuned backbone."""
    cfg = inputs.cfg
    if not cfg.tune_top.enabled and not cfg.fine_tune.layers:
        return inputs.clean_features
    return predict_images(final.with_features(), inputs.paths, cfg.heads.batch_size)[FEATURES]


def _task_summary(task: Task, results: list[FoldResult], oof_metrics: dict) -> dict:
    per_fold = [headline(task, r.metrics[task.name]) for r in results]
    return {
        "kind": str(task.kind),
        "headline": {
            "metric": "accuracy" if task.multiclass else "binary_accuracy",
            "per_fold": per_fold,
            "mean": float(np.mean(per_fold)),
        },
        "per_fold": [r.metrics[task.name] for r in results],
        "out_of_fold": oof_metrics,
        "thresholds": dict(zip(task.labels, task.thresholds, strict=True)),
    }


def _compact(oof_metrics: dict[str, dict]) -> dict[str, dict[str, float]]:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mAP", "exact_match")
    return {name: {k: m[k] for k in keys if k in m} for name, m in oof_metrics.items()}
