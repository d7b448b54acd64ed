"""k-fold cross-validation: folds, cached features, per-fold models, reports, the chosen model.

A run directory is the unit of output: everything a run made, with the exact config and
package versions, so any result can be traced and reproduced.
"""

from __future__ import annotations

import platform
import shutil
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

from cardamage.config import TrainConfig
from cardamage.data.folds import make_folds
from cardamage.data.manifest import Manifest, load_manifest, write_manifest, write_problems
from cardamage.errors import CardamageError
from cardamage.evaluate.metrics import headline, task_metrics, tune_thresholds
from cardamage.evaluate.report import plot_history, write_results_txt, write_summary_json
from cardamage.io import atomic_write_json
from cardamage.model.metadata import ModelSpec
from cardamage.model.multitask import ModelBundle, build_model
from cardamage.tasks import Task
from cardamage.train import runtime
from cardamage.train.features import cached_features, default_cache_dir
from cardamage.train.trainer import FoldData, fine_tune, fit_heads

PACKAGES = ("cardamage", "keras", "tensorflow", "tensorflow-cpu", "numpy", "scikit-learn", "pillow")


@dataclass
class FoldResult:
    index: int
    metrics: dict[str, dict]
    history: dict[str, list[float]]
    bundle: ModelBundle


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Never touch an existing run unless asked: a typo must not destroy last week's results."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise CardamageError(
                f"run directory {out} already exists and is not empty: "
                f"choose another --out or pass --overwrite"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def versions() -> dict[str, str]:
    found = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": runtime.device_summary(),
    }
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


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
) -> tuple[FoldResult, dict[str, np.ndarray]]:
    """``backbone_weights`` are those the cached features came from (random ones included)."""
    fold_dir = run_dir / "folds" / f"fold_{index}"
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
    bundle = ModelBundle(model, model_spec(cfg), tasks, {"fold": index})
    bundle.save(fold_dir / "model")
    atomic_write_json(fold_dir / "metrics.json", metrics)
    plot_history(history, run_dir / "curves", f"fold{index}")
    return FoldResult(index, metrics, history, bundle), scores


def fold_score(metrics: dict[str, dict]) -> float:
    """One number to pick the best fold: mean macro-F1 over tasks (not inflated by negatives)."""
    return float(np.mean([m["macro_f1"] for m in metrics.values()]))


def cross_validate(cfg: TrainConfig) -> dict:
    """Train k folds, write the run directory, return the summary."""
    started = time.time()
    tasks = cfg.build_tasks()
    manifest, problems = load_manifest(cfg.data, cfg.image_root, tasks, skip_bad=cfg.skip_bad)
    splits = make_folds(manifest, tasks, cfg.folds, cfg.seed)
    prepare_run_dir(cfg.out, cfg.overwrite)
    _record_inputs(cfg, manifest, problems, splits)
    precision = runtime.configure_precision(cfg.mixed_precision)
    runtime.set_seed(cfg.seed)
    spec = model_spec(cfg)
    paths = manifest.paths()
    _, backbones, _ = build_model(spec, tasks[:1])
    backbone_weights = backbones[0].get_weights()
    print(
        f"cardamage: {len(manifest)} images, {cfg.folds} folds, {cfg.backbone} at "
        f"{cfg.image_size} px on {runtime.device_summary()} ({precision})"
    )
    features = cached_features(
        backbones[0],
        spec,
        paths,
        cfg.augment,
        cfg.views,
        cfg.seed,
        cfg.cache_dir or default_cache_dir(),
    )
    targets = {t.name: manifest.targets(t) for t in tasks}
    oof = {t.name: np.zeros_like(targets[t.name]) for t in tasks}
    results = []
    for index, (train, val) in enumerate(splits, start=1):
        keras.backend.clear_session()
        data = FoldData(features, targets, paths, train, val)
        result, scores = train_fold(index, cfg, tasks, data, backbone_weights, cfg.out)
        for name, value in scores.items():
            oof[name][val] = value
        results.append(result)
        print(
            f"fold {index}/{cfg.folds}: "
            + ", ".join(f"{t.name} {headline(t, result.metrics[t.name]):.3f}" for t in tasks)
        )
    summary = _finish(cfg, tasks, manifest, targets, oof, results)
    summary["seconds"] = round(time.time() - started, 1)
    write_summary_json(cfg.out / "summary.json", summary)
    return summary


def _record_inputs(cfg: TrainConfig, manifest: Manifest, problems: list, splits: list) -> None:
    atomic_write_json(cfg.out / "config.json", cfg.model_dump(mode="json"))
    atomic_write_json(cfg.out / "versions.json", versions())
    write_manifest(manifest, cfg.out / "manifest.csv", cfg.build_tasks())
    if problems:
        write_problems(problems, cfg.out / "skipped.csv")
    atomic_write_json(
        cfg.out / "folds.json",
        [
            {"fold": i, "validation": [manifest.images[j] for j in val]}
            for i, (_, val) in enumerate(splits, start=1)
        ],
    )


def _finish(
    cfg: TrainConfig,
    tasks: list[Task],
    manifest: Manifest,
    targets: dict,
    oof: dict,
    results: list[FoldResult],
) -> dict:
    """Tune thresholds out-of-fold, score out-of-fold, write reports, save the chosen model."""
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
    chosen = ModelBundle(
        best.bundle.model,
        best.bundle.spec,
        tasks,
        {
            "fold": best.index,
            "trained_on": len(manifest),
            "out_of_fold": _compact(oof_metrics),
            "versions": versions(),
        },
    )
    chosen.save(cfg.out / "model")
    _write_oof(cfg.out / "oof_predictions.csv", manifest, tasks, oof)
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


def _write_oof(path: Path, manifest: Manifest, tasks: list[Task], oof: dict) -> None:
    """Every image's out-of-fold scores: the raw material for error analysis."""
    import csv
    import io

    from cardamage.io import atomic_write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image"] + [f"{t.name}:{label}" for t in tasks for label in t.labels])
    for i, image in enumerate(manifest.images):
        writer.writerow(
            [image] + [f"{oof[t.name][i, j]:.4f}" for t in tasks for j in range(len(t.labels))]
        )
    atomic_write_text(path, buffer.getvalue())
