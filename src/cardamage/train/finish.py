"""After the folds: what a run ships and reports, from out-of-fold results only.

`finish` reads as the list of steps; each step lives with what it is about: calibration and the
trust checks in `trust`, thresholds and metrics in `metrics`, files and the summary in `runs`,
the final model here. With a fixed validation split only its val rows have out-of-fold scores:
thresholds, calibration, the out-of-fold metrics and label review use those alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sklearn.model_selection import KFold

from cardamage.data.manifest import Manifest
from cardamage.metrics.classification import task_metrics, with_tuned_thresholds
from cardamage.metrics.label_review import find_issues
from cardamage.model.metadata import FEATURES
from cardamage.model.multitask import ModelBundle, MultiTaskClassifier, fold_ensemble
from cardamage.runs.rundir import RunDir
from cardamage.runs.summary import (
    DistributionSummary,
    Metrics,
    ReviewSummary,
    RunSummary,
    task_summary,
)
from cardamage.tasks import Task
from cardamage.train import runtime
from cardamage.train.folds import (
    FoldResult,
    Inputs,
    fresh_session,
    model_spec,
    train_model,
    tuned_outputs,
)
from cardamage.train.review_scores import linear_scores, review_scores
from cardamage.train.splits import held_out_rows
from cardamage.trust.calibrators import calibrate
from cardamage.trust.training import TrustChecks, calibrate_out_of_fold, fit_trust_checks


@dataclass(frozen=True)
class OutOfFold:
    """The rows that have out-of-fold scores, their targets, and each one's scores from the
    fold that held it out; ``checked``: splits of those rows on which calibration is measured
    honestly (the folds themselves, or halves of a fixed validation split)."""

    rows: np.ndarray
    checked: list
    targets: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]

    @classmethod
    def collect(cls, inputs: Inputs, splits: list, results: list[FoldResult]) -> OutOfFold:
        rows = held_out_rows(splits)
        if len(splits) > 1:
            checked = splits
        else:
            checked = list(KFold(2, shuffle=True, random_state=inputs.cfg.run.seed).split(rows))
        every = out_of_fold(inputs.targets, splits, [r.scores for r in results])
        return cls(
            rows,
            checked,
            {name: y[rows] for name, y in inputs.targets.items()},
            {name: scores[rows] for name, scores in every.items()},
        )


def finish(
    inputs: Inputs, manifest: Manifest, splits: list, results: list[FoldResult]
) -> RunSummary:
    """Calibrate, tune thresholds and score out of fold; ship the final model with its trust
    checks; write the results, the out-of-fold scores and label review; summarise."""
    cfg, run = inputs.cfg, RunDir(inputs.cfg.run.out)
    oof = OutOfFold.collect(inputs, splits, results)
    calibrated = calibrate_out_of_fold(
        inputs.tasks, oof.targets, oof.scores, oof.checked, cfg.trust
    )
    scores = calibrated.scores
    tasks = inputs.tasks
    if cfg.run.tune_thresholds:
        tasks = with_tuned_thresholds(tasks, oof.targets, scores)
    oof_metrics = {t.name: task_metrics(t, oof.targets[t.name], scores[t.name]) for t in tasks}
    best = max(results, key=lambda r: fold_score(r.metrics))
    run.write_results(tasks, [r.metrics for r in results], oof_metrics, best.index)
    final = final_model(inputs, results, best)
    info = _training_info(inputs, len(manifest), best, oof_metrics)
    spec = replace(
        model_spec(cfg),
        ensemble=final.spec.ensemble,
        ensemble_backbones=final.spec.ensemble_backbones,
    )
    ModelBundle(final, spec, tasks, info, calibrated.calibration).save(run.model_dir)
    features = _training_features(inputs, final)
    trust = fit_trust_checks(features, splits, tasks, oof.targets, scores, cfg.trust)
    trust.save(run.model_dir)
    validated = manifest.subset(oof.rows)
    run.write_oof(validated, tasks, oof.scores)
    if cfg.run.label_review != "off":
        review = _review_scores(inputs, results, splits, calibrated.calibration)
        run.write_label_issues(
            find_issues(validated, tasks, {k: v[oof.rows] for k, v in review.items()})
        )
    return _summary(inputs, len(splits), best, tasks, results, oof_metrics, calibrated.ece, trust)


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


def final_model(inputs: Inputs, results: list[FoldResult], best: FoldResult) -> MultiTaskClassifier:
    """What the run ships (``run.final_model``): the best fold's model, every fold's heads on
    one backbone, or a model refitted on every photo for the folds' median epochs."""
    if inputs.cfg.run.final_model == "best_fold":
        return ModelBundle.load(best.model_dir).model
    if inputs.cfg.run.final_model == "fold_ensemble":
        tuned = inputs.cfg.tunes_backbone
        print(
            f"final model: all {len(results)} folds' models, each on its own tuned backbone"
            if tuned
            else f"final model: the heads of all {len(results)} folds on one backbone"
        )
        models = [ModelBundle.load(r.model_dir).model for r in results]
        return fold_ensemble(models, own_backbones=tuned)
    fresh_session(inputs.cfg)
    everything = np.arange(len(inputs.paths))
    data = inputs.fold(everything, everything[:0])
    print("final model: refit on all images")
    log_dir = RunDir(inputs.cfg.run.out).final_dir
    model, _, _, _ = train_model(
        inputs, data, log_dir, inputs.cfg.run.seed, median_schedule(results)
    )
    return model


def _training_info(
    inputs: Inputs, images: int, best: FoldResult, oof_metrics: dict[str, Metrics]
) -> dict:
    """What model.json records about the training (the API's `training`)."""
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mAP", "exact_match")
    final = inputs.cfg.run.final_model
    return {
        "final_model": final,
        "fold": best.index if final == "best_fold" else None,
        "trained_on": images,
        "out_of_fold": {name: {k: m[k] for k in keys if k in m} for name, m in oof_metrics.items()},
        "versions": runtime.versions(),
    }


def _training_features(inputs: Inputs, final: MultiTaskClassifier) -> np.ndarray:
    """The shipped model's features of every training image: the cached ones while the backbone
    stays as it was pretrained, else one pass of the tuned backbone (of its tuned layers, on the
    photos' cached activations, where it trained on them; flip TTA has no mirrored ones)."""
    cfg = inputs.cfg
    if not cfg.tunes_backbone:
        return inputs.clean_features
    rows = np.arange(len(inputs.paths))
    outputs = tuned_outputs(
        final, inputs.activations, inputs.paths, rows, cfg.heads.batch_size, features=True
    )
    return outputs[FEATURES]


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


def _summary(
    inputs: Inputs,
    folds: int,
    best: FoldResult,
    tasks: list[Task],
    results: list[FoldResult],
    oof_metrics: dict[str, Metrics],
    ece: dict[str, dict[str, float]],
    trust: TrustChecks,
) -> RunSummary:
    cfg = inputs.cfg
    review = trust.review
    return RunSummary(
        folds=folds,
        val_split=cfg.data.val_split,
        images=len(inputs.paths),
        best_fold=best.index,
        final_model=cfg.run.final_model,
        tasks={
            t.name: task_summary(
                t, [r.metrics[t.name] for r in results], oof_metrics[t.name], ece.get(t.name)
            )
            for t in tasks
        },
        distribution=None
        if trust.distribution is None
        else DistributionSummary.model_validate(trust.distribution.summary()),
        review=ReviewSummary.model_validate({"thresholds": review.thresholds, **review.chosen_for}),
    )
