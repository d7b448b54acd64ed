"""k-fold cross-validation: folds, cached features, per-fold models, reports, the chosen model.

A fold is finished when its metrics.json exists (written last), so an interrupted or killed run
resumes from the last finished fold with `cardamage train --resume RUN`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cardamage.config import TrainConfig
from cardamage.data.folds import make_folds
from cardamage.data.manifest import Manifest, load_manifest
from cardamage.evaluate.metrics import headline, task_metrics, tune_thresholds
from cardamage.evaluate.report import plot_history, write_results_txt, write_summary_json
from cardamage.io import atomic_path, atomic_write_json
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import ModelBundle, build_model
from cardamage.tasks import Task
from cardamage.train import rundir, runtime
from cardamage.train.features import cached_features, default_cache_dir
from cardamage.train.trainer import FoldData, fine_tune, fit_heads

METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.npz"


@dataclass
class FoldResult:
    index: int
    metrics: dict[str, dict]
    scores: dict[str, np.ndarray]  # validation scores per task
    model_dir: Path


def model_spec(cfg: TrainConfig) -> ModelSpec:
    return ModelSpec(
        backbone=cfg.backbone,
        weights=cfg.weights,
        image_size=cfg.image_size,
        alpha=cfg.alpha,
        head_units=cfg.head_units,
        dropout=cfg.dropout,
        layout=cfg.layout,
    )


def predict_heads(heads: list[keras.Model], x: np.ndarray) -> dict[str, np.ndarray]:
    scores: dict[str, np.ndarray] = {}
    for head in heads:
        scores.update({k: np.asarray(v) for k, v in head.predict(x, verbose=0).items()})
    return scores


def predict_images(model: keras.Model, paths: list[Path], batch_size: int) -> dict[str, np.ndarray]:
    from cardamage.data.pipeline import iter_image_batches

    parts: dict[str, list[np.ndarray]] = {}
    for batch in iter_image_batches(paths, model.input_shape[1], batch_size):
        for name, value in model.predict_on_batch(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def train_fold(
    index: int,
    cfg: TrainConfig,
    tasks: list[Task],
    data: FoldData,
    backbone_weights: list[np.ndarray],
    run_dir: Path,
) -> FoldResult:
    """``backbone_weights`` are those the cached features came from (random ones included)."""
    fold_dir = run_dir / "folds" / f"fold_{index}"
    shutil.rmtree(fold_dir, ignore_errors=True)
    runtime.set_seed(cfg.seed + index)
    with runtime.distribution_scope():
        model, backbones, heads = build_model(model_spec(cfg), tasks)
        for backbone in backbones:
            backbone.set_weights(backbone_weights)
        history = fit_heads(heads, tasks, data, cfg, fold_dir)
        if cfg.fine_tune_layers:
            for key, values in fine_tune(model, backbones, tasks, data, cfg, fold_dir).items():
                history.setdefault(key, []).extend(float(v) for v in values)
            scores = predict_images(model, [data.paths[i] for i in data.val], cfg.batch_size)
        else:
            scores = predict_heads(heads, np.asarray(data.features[0, data.val]))
    metrics = {
        t.name: task_metrics(t, data.targets[t.name][data.val], scores[t.name]) for t in tasks
    }
    ModelBundle(model, model_spec(cfg), tasks, {"fold": index}).save(fold_dir / "model")
    plot_history(history, run_dir / "curves", f"fold{index}")
    with atomic_path(fold_dir / SCORES_FILE) as tmp:
        np.savez(tmp, **scores)
    atomic_write_json(fold_dir / METRICS_FILE, metrics)  # last: marks the fold finished
    return FoldResult(index, metrics, scores, fold_dir / "model")


def finished_fold(index: int, run_dir: Path) -> FoldResult | None:
    """A fold finished before an interruption, or None (a half-written fold is cleared)."""
    fold_dir = run_dir / "folds" / f"fold_{index}"
    if not (fold_dir / METRICS_FILE).exists():
        shutil.rmtree(fold_dir, ignore_errors=True)
        return None
    metrics = json.loads((fold_dir / METRICS_FILE).read_text(encoding="utf-8"))
    with np.load(fold_dir / SCORES_FILE) as saved:
        scores = {name: saved[name] for name in saved.files}
    return FoldResult(index, metrics, scores, fold_dir / "model")


def fold_score(metrics: dict[str, dict]) -> float:
    """One number to pick the best fold: mean macro-F1 over tasks (not inflated by negatives)."""
    return float(np.mean([m["macro_f1"] for m in metrics.values()]))


def cross_validate(cfg: TrainConfig, resume: bool = False) -> dict:
    """Train k folds (or the ones an interrupted run left), write the run directory."""
    started = time.time()
    tasks = cfg.build_tasks()
    manifest, problems = load_manifest(cfg.data, cfg.image_root, tasks, skip_bad=cfg.skip_bad)
    splits = make_folds(manifest, tasks, cfg.folds, cfg.seed)
    if resume:
        rundir.check_same_folds(cfg, manifest, splits)
    else:
        rundir.prepare(cfg.out, cfg.overwrite)
        rundir.record_inputs(cfg, manifest, problems, splits)
    precision = runtime.configure_precision(cfg.mixed_precision)
    print(
        f"cardamage: {len(manifest)} images, {cfg.folds} folds, {cfg.backbone} at "
        f"{cfg.image_size} px on {runtime.device_summary()} ({precision})"
    )
    results = _train_folds(cfg, tasks, manifest, splits)
    summary = _finish(cfg, tasks, manifest, splits, results)
    summary["seconds"] = round(time.time() - started, 1)
    write_summary_json(cfg.out / "summary.json", summary)
    return summary


def _train_folds(
    cfg: TrainConfig, tasks: list[Task], manifest: Manifest, splits: list
) -> list[FoldResult]:
    """Every fold's result, training only those not finished yet (features built lazily)."""
    results: list[FoldResult | None] = [finished_fold(i, cfg.out) for i in range(1, cfg.folds + 1)]
    if all(results):
        return results  # type: ignore[return-value]
    runtime.set_seed(cfg.seed)
    spec = model_spec(cfg)
    _, backbones, _ = build_model(spec, tasks[:1])
    backbone_weights = backbones[0].get_weights()
    paths = manifest.paths()
    cache = cfg.cache_dir or default_cache_dir()
    features = cached_features(backbones[0], spec, paths, cfg.augment, cfg.views, cfg.seed, cache)
    targets = {t.name: manifest.targets(t) for t in tasks}
    for index, (train, val) in enumerate(splits, start=1):
        if results[index - 1] is not None:
            print(f"fold {index}/{cfg.folds}: finished before, kept")
            continue
        keras.backend.clear_session()
        data = FoldData(features, targets, paths, train, val)
        result = train_fold(index, cfg, tasks, data, backbone_weights, cfg.out)
        results[index - 1] = result
        scores = ", ".join(f"{t.name} {headline(t, result.metrics[t.name]):.3f}" for t in tasks)
        print(f"fold {index}/{cfg.folds}: {scores}")
    return results  # type: ignore[return-value]


def _finish(
    cfg: TrainConfig, tasks: list[Task], manifest: Manifest, splits: list, results: list[FoldResult]
) -> dict:
    """Tune thresholds out-of-fold, score out-of-fold, write reports, save the chosen model."""
    targets = {t.name: manifest.targets(t) for t in tasks}
    oof = {t.name: np.zeros_like(targets[t.name]) for t in tasks}
    for result, (_, val) in zip(results, splits, strict=True):
        for name, value in result.scores.items():
            oof[name][val] = value
    if cfg.tune_thresholds:
        tasks = [
            t if t.multiclass else t.with_thresholds(tune_thresholds(targets[t.name], oof[t.name]))
            for t in tasks
        ]
    best = max(results, key=lambda r: fold_score(r.metrics))
    oof_metrics = {t.name: task_metrics(t, targets[t.name], oof[t.name]) for t in tasks}
    for task in tasks:
        write_results_txt(
            cfg.out / f"results_{task.name}.txt",
            task,
            [r.metrics[task.name] for r in results],
            oof_metrics[task.name],
            best.index - 1,
        )
    best_bundle = ModelBundle.load(best.model_dir)
    chosen = ModelBundle(
        best_bundle.model,
        best_bundle.spec,
        tasks,
        {
            "fold": best.index,
            "trained_on": len(manifest),
            "out_of_fold": _compact(oof_metrics),
            "versions": rundir.versions(),
        },
    )
    chosen.save(cfg.out / "model")
    rundir.write_oof(cfg.out / "oof_predictions.csv", manifest, tasks, oof)
    return {
        "folds": cfg.folds,
        "images": len(manifest),
        "best_fold": best.index,
        "tasks": {
            t.name: {
                "kind": str(t.kind),
                "headline": {
                    "metric": "accuracy" if t.multiclass else "binary_accuracy",
                    "per_fold": [headline(t, r.metrics[t.name]) for r in results],
                    "mean": float(np.mean([headline(t, r.metrics[t.name]) for r in results])),
                },
                "per_fold": [r.metrics[t.name] for r in results],
                "out_of_fold": oof_metrics[t.name],
                "thresholds": dict(zip(t.labels, t.thresholds, strict=True)),
            }
            for t in tasks
        },
    }


def _compact(oof_metrics: dict[str, dict]) -> dict[str, dict[str, float]]:
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mAP", "exact_match")
    return {name: {k: m[k] for k in keys if k in m} for name, m in oof_metrics.items()}
