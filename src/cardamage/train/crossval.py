"""k-fold cross-validation: the folds (or those an interrupted run left), then what ships.

The model a run ships is by default refitted on all images for the median number of epochs
early stopping chose in the folds: more data and no optimistic pick of a lucky fold, which is
what generalises to photos nobody has seen. `final_model: best_fold` keeps the original's choice;
`fold_ensemble` ships every fold's model, their probabilities averaged (the heads on the one
backbone when it stayed frozen, each fold's own backbone when the folds tuned it). Thresholds
are tuned on the folds' out-of-fold scores whatever ships: no photo is out of sample for a refit
model or an ensemble of the folds (docs: real photos).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from cardamage.config import TrainConfig
from cardamage.metrics.classification import headline
from cardamage.runs.rundir import RunDir
from cardamage.runs.summary import RunSummary
from cardamage.train import interrupt, runtime
from cardamage.train.features import RemoteFill
from cardamage.train.finish import finish
from cardamage.train.folds import FoldResult, Inputs, finished_fold, fresh_session, train_fold
from cardamage.train.splits import read_run_data


def cross_validate(
    cfg: TrainConfig, resume: bool = False, remote: RemoteFill | None = None
) -> RunSummary:
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
        summary = finish(inputs, manifest, splits, results)
    summary = summary.model_copy(
        update={
            "test_images": len(data.test),
            "seconds": round(time.time() - started, 1),
            "finished": datetime.now(UTC).replace(microsecond=0),
        }
    )
    run.write_summary(summary)
    return summary


def _already_finished(run: RunDir) -> RunSummary:
    """A finished run resumed: its summary, nothing retrained or rewritten (a refit would
    change the model its reports describe)."""
    summary = run.summary()
    print(f"{run.path} finished at {run.finished_at(summary).isoformat()}: nothing to resume")
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
            fresh_session(cfg)
            result = train_fold(index, inputs, train, val)
            scores = ", ".join(f"{t.name} {headline(t, result.metrics[t.name]):.3f}" for t in tasks)
            print(f"fold {index}/{len(splits)}: {scores}")
        results.append(result)
    return results
