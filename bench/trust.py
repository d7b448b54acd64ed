"""Benchmark of knowing when not to answer, on real photos (lensor-coco), the same photos
under common corruptions, and non-car images.

Trains on lensor-coco's train split (grouped folds, cached features, MobileNetV2 at 224 px with
the real-photos preset's linear heads), then scores its val and test splits (other cars of the
same source), the same held-out photos under seven corruptions at two strengths (albumentations:
blur, JPEG, noise, brightness, contrast, colour cast, downscaling; a stand-in for photos from
another camera or source; blur, light and contrast also at a third strength past what a
photo can be judged from, which the quality checks should decline) and non-car images
(textures, flat colours, text, shapes and scikit-image's natural photos). It prints, for the
two questions apart:

1. *Is this a usable photo of a car?* For each distribution score (all fitted on the same
   training features and folds): the share of genuine photos passed per set and of non-car
   images flagged. Then, with the default, the share each set loses to the quality checks, to
   the distribution check and to both.
2. *How sure is the answer?* Per task and set: accuracy on all photos, on the answered ones
   and on those answered without review (the review policy fitted out of fold, as training
   does), and a score a guess of the commonest answer does not earn (balanced accuracy,
   macro-F1) on all and on the answered; the AUROC of the confidence for correctness; accuracy
   along the risk-coverage curve.

Targets (issue 29): genuine passed >= 90 % on the clean and the mild sets, non-cars flagged
>= 90 %, answered accuracy >= all-photo accuracy on every set, accuracy falling with coverage.
Engine outputs are cached under ``--work`` (give the same folder again to skip the training and
the backbone). Skips when ../shared is absent.

    python -m bench.trust --work /tmp/bench-trust
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from bench.common import (
    LENSOR,
    WEIGHTS,
    add_seed,
    add_work,
    constructed,
    lensor_present,
    lensor_work,
    natural_photos,
    parser,
)
from cardamage.config import QualityRules, TrustConfig, load_train_config
from cardamage.data.images import load_image
from cardamage.data.manifest import load_manifest
from cardamage.inference.predictor import Predictor
from cardamage.metrics.calibration import reliability
from cardamage.metrics.classification import decide
from cardamage.model.metadata import FEATURES
from cardamage.runs.rundir import RunDir
from cardamage.train.crossval import cross_validate
from cardamage.trust.calibrators import calibrate
from cardamage.trust.distribution import METHODS, DistributionCheck
from cardamage.trust.quality import RULES, judge, measure
from cardamage.trust.review import ReviewPolicy, confidence, correct

#: Per photo, the quality checks' figures in RULES' order (cached, judged under today's rules).
QUALITY = "quality"
#: Coverages the risk-coverage curve is printed at.
CURVE = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)


def corruptions() -> dict[str, dict[str, Callable]]:
    """Per corruption, its transform at each strength (fixed, applied at 640 px): mild and
    strong, and for blur, light and contrast also past what a photo can be judged from (the
    quality checks should decline those)."""
    import albumentations as A

    def blur(sigma: float) -> Callable:
        return A.GaussianBlur(sigma_limit=(sigma, sigma), blur_limit=0, p=1)

    def jpeg(quality: int) -> Callable:
        return A.ImageCompression(quality_range=(quality, quality), p=1)

    def brightness(b: float) -> Callable:
        return A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(0, 0), p=1)

    def contrast(c: float) -> Callable:
        return A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(c, c), p=1)

    def noise(std: float) -> Callable:
        return A.GaussNoise(std_range=(std, std), p=1)

    def downscale(scale: float) -> Callable:
        return A.Downscale(scale_range=(scale, scale), p=1)

    def cast(x: int) -> Callable:
        return A.RGBShift(r_shift_limit=(x, x), g_shift_limit=(0, 0), b_shift_limit=(-x, -x), p=1)

    return {
        "blur": {"mild": blur(1.5), "strong": blur(4), "unusable": blur(16)},
        "jpeg": {"mild": jpeg(30), "strong": jpeg(8)},
        "noise": {"mild": noise(0.05), "strong": noise(0.15)},
        "brightness": {
            "mild": brightness(-0.25),
            "strong": brightness(-0.5),
            "unusable": brightness(-0.85),
        },
        "contrast": {"mild": contrast(-0.4), "strong": contrast(-0.7), "unusable": contrast(-0.95)},
        "colour": {"mild": cast(25), "strong": cast(60)},
        "downscale": {"mild": downscale(0.35), "strong": downscale(0.12)},
    }


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--folds", type=int, default=5)
    add_seed(p, 42)
    add_work(p, "reused: the run and the engine outputs are cached")
    return p.parse_args()


def train(data: Path, config: Path, out: Path, args: argparse.Namespace) -> Path:
    options = {
        "data": data,
        "images": LENSOR / "images",
        "out": out,
        "backbone": "mobilenetv2",
        "weights": str(WEIGHTS),
        "image_size": args.size,
        "folds": args.folds,
        "seed": args.seed,
        "cache_dir": out.parent / "cache",
        "overwrite": True,
        "head_units": 0,
        "dropout": 0.0,
        "standardize": True,
        "head_l2": 0.1,
    }
    cross_validate(load_train_config(config, options))
    return out


def engine_outputs(predictor: Predictor, images: list) -> dict[str, np.ndarray]:
    """The engine's raw outputs (scores before calibration, and the features), and per photo
    the quality checks' figures (``quality``: one column per check, judged later)."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), 32):
        photos = [predictor.decode(image) for image in images[start : start + 32]]
        figures = [measure(photo) for photo in photos]
        parts.setdefault(QUALITY, []).append(np.array([[f[n] for n in RULES] for f in figures]))
        pixels = np.stack([p.pixels for p in photos]).astype(np.float32)
        for name, value in predictor.engine(pixels).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def outputs(work: Path, predictor: Predictor, sets: dict[str, Callable[[], list]]) -> dict:
    """Per set, the engine outputs and the quality figures, cached in ``work``; ``usable``:
    whether each photo passes every quality check under the predictor's rules."""
    cache = work / "outputs.npz"
    found = dict(np.load(cache)) if cache.exists() else {}
    for name, images in sets.items():
        if f"{name}/{QUALITY}" not in found:
            found |= {f"{name}/{k}": v for k, v in engine_outputs(predictor, images()).items()}
            np.savez(cache, **found)
            print(f"  scored {name}: {len(found[f'{name}/{QUALITY}'])} photos", flush=True)
    per_set = {
        name: {k.split("/", 1)[1]: v for k, v in found.items() if k.startswith(f"{name}/")}
        for name in sets
    }
    for out in per_set.values():
        out["usable"] = np.array([_usable(row, predictor.quality) for row in out[QUALITY]])
    return per_set


def _usable(figures: np.ndarray, rules: QualityRules) -> bool:
    checks = judge(dict(zip(RULES, figures.tolist(), strict=True)), rules)
    return all(check.passed for check in checks)


def run_splits(run: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run's folds as index arrays into its out-of-fold file's rows."""
    folds = json.loads((run / "folds.json").read_text())
    images = RunDir(run).read_oof(RunDir(run).model_meta().tasks)[0]
    index = {image: i for i, image in enumerate(images)}
    splits = []
    for fold in folds:
        held = set(fold["validation"])
        train = np.array([index[x] for x in images if x not in held])
        splits.append((train, np.array([index[x] for x in fold["validation"]])))
    return splits


def distribution_table(train_features, splits, sets: dict, coverages: tuple[float, ...]) -> None:
    """Per score and coverage setting: the share of each set passed, non-cars flagged."""
    names = [n for n in sets if n != "non-car"]
    columns = [(m, c) for c in coverages for m in METHODS]
    print("\n1. usable photo of a car: share passed by the distribution check alone")
    print(f"{'set':<18}" + "".join(f"{m[:8] + f' {c:.1%}':>15}" for m, c in columns))
    checks = [DistributionCheck.fit(train_features, splits, m, c) for m, c in columns]
    passed = [
        {n: np.mean([v.passed for v in check.verdicts(sets[n][FEATURES])]) for n in sets}
        for check in checks
    ]
    for name in names:
        print(f"{name:<18}" + "".join(f"{p[name]:>15.1%}" for p in passed))
    print(f"{'non-car flagged':<18}" + "".join(f"{1 - p['non-car']:>15.1%}" for p in passed))
    genuine, strangers = sets["held-out"][FEATURES], sets["non-car"][FEATURES]
    truth = np.r_[np.ones(len(genuine)), np.zeros(len(strangers))]
    auroc = [
        roc_auc_score(truth, np.r_[c.density.score(genuine), c.density.score(strangers)])
        for c in checks
    ]
    print(f"{'AUROC vs non-car':<18}" + "".join(f"{a:>15.3f}" for a in auroc))
    print("(each set for its share of genuine training photos passed out of fold)")


def declined(check: DistributionCheck, sets: dict) -> dict[str, np.ndarray]:
    """Per set, whether each photo is declined: a failed quality check or not like a car."""
    out = {}
    print(f"\n{'set':<18}{'quality ok':>12}{'car-like':>10}{'passed':>9}")
    for name, outputs_ in sets.items():
        car = np.array([v.passed for v in check.verdicts(outputs_[FEATURES])])
        usable = outputs_["usable"]
        out[name] = ~(car & usable)
        shown = 1 - out[name].mean() if name != "non-car" else out[name].mean()
        label = "non-car flagged" if name == "non-car" else name
        print(f"{label:<18}{usable.mean():>12.1%}{car.mean():>10.1%}{shown:>9.1%}")
    return out


def answers_table(predictor, review: ReviewPolicy, sets: dict, targets: dict, refused) -> None:
    print(
        "\n2. how sure is the answer: accuracy on all photos / on the answered (not declined) / "
        "on those answered without review; coverage of each; AUROC of confidence for correctness; "
        "a score that a guess of the commonest answer does not earn (balanced accuracy, macro-F1) "
        "on all and on the answered photos"
    )
    for task in predictor.tasks:
        metric, fair = ("accuracy", "bal.acc") if task.multiclass else ("exact match", "macroF1")
        threshold = review.thresholds[task.name]
        print(f"\n{task.name} ({metric}; review under confidence {threshold:.3f})")
        header = ("all", 7), ("answered", 10), ("(share)", 9), ("no review", 10), ("(share)", 9)
        header += ("AUROC", 7), (fair, 9), ("answered", 10)
        print(f"{'set':<18}" + "".join(f"{h:>{w}}" for h, w in header))
        for name, out in sets.items():
            if name == "non-car":
                continue
            y = targets[name][task.name]
            scores = calibrate(predictor.meta.calibration.get(task.name), out[task.name])
            right = correct(task, y, scores)
            answered = ~refused[name]
            sure = answered & (confidence(task, scores) >= threshold)
            auroc = (
                roc_auc_score(right, confidence(task, scores)) if 0 < right.mean() < 1 else np.nan
            )
            print(
                f"{name:<18}{right.mean():>7.3f}{_mean(right[answered]):>10}{answered.mean():>9.0%}"
                f"{_mean(right[sure]):>10}{sure.mean():>9.0%}{auroc:>7.3f}"
                f"{_fair(task, y, scores, np.ones(len(right), bool)):>9}"
                f"{_fair(task, y, scores, answered):>10}"
            )
        _curve(task, predictor, sets, targets, refused)


def _curve(task, predictor, sets, targets, refused) -> None:
    """Accuracy among the most confident answered photos, per share of them answered."""
    print(f"  risk-coverage, answered photos ({task.name} accuracy at each coverage):")
    print(f"  {'set':<16}" + "".join(f"{c:>7.0%}" for c in CURVE))
    for name in ("held-out", "blur-mild", "jpeg-mild", "downscale-mild", "colour-mild"):
        answered = ~refused[name]
        scores = calibrate(predictor.meta.calibration.get(task.name), sets[name][task.name])
        right = correct(task, targets[name][task.name], scores)[answered]
        order = np.argsort(-confidence(task, scores[answered]), kind="stable")
        cells = [right[order][: max(1, round(c * len(order)))].mean() for c in CURVE]
        print(f"  {name:<16}" + "".join(f"{v:>7.3f}" for v in cells))


def _fair(task, y: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> str:
    """Balanced accuracy (multiclass) or macro-F1 (multilabel) of the decisions on ``rows``:
    unlike accuracy, answering every photo with the commonest class earns chance, not 0.67."""
    if rows.sum() < 10:
        return "-"
    y, found = np.asarray(y)[rows] > 0, decide(task, scores[rows])
    if task.multiclass:
        return f"{balanced_accuracy_score(y.argmax(1), found.argmax(1)):.3f}"
    return f"{f1_score(y, found, average='macro', zero_division=0):.3f}"


def _mean(values: np.ndarray) -> str:
    return f"{values.mean():.3f}" if len(values) else "-"


def calibration_table(predictor: Predictor, raw: dict, targets: dict) -> None:
    print(f"\n{'held-out ECE':<22}{'raw':>8}{'calibrated':>12}")
    for task in predictor.tasks:
        fitted = predictor.meta.calibration.get(task.name)
        y = targets[task.name]
        before = reliability(y, raw[task.name], multiclass=task.multiclass)
        after = reliability(y, calibrate(fitted, raw[task.name]), multiclass=task.multiclass)
        print(f"{task.name:<22}{before['ece']:>8.3f}{after['ece']:>12.3f}")


def main() -> None:
    if not lensor_present():
        return
    args = parse_args()
    work, manifest_csv, config = lensor_work(args.work, "bench-trust-")
    header, *body = manifest_csv.read_text().splitlines()
    for name, keep in (("train", True), ("heldout", False)):
        rows = [r for r in body if r.startswith("train/") == keep]
        (work / f"{name}.csv").write_text("\n".join([header, *rows]) + "\n")
    run = work / "lensor"
    if not (run / "summary.json").exists():
        train(work / "train.csv", config, run, args)
    predictor = Predictor.load(run)
    tasks = predictor.tasks
    trained, _ = load_manifest(work / "train.csv", LENSOR / "images", tasks)
    heldout, _ = load_manifest(work / "heldout.csv", LENSOR / "images", tasks)

    def corrupted(transform: Callable) -> Callable[[], list]:
        return lambda: [transform(image=load_image(p))["image"] for p in heldout.paths()]

    sources = {"train": trained.paths, "held-out": heldout.paths}
    sources["non-car"] = lambda: constructed(224) + natural_photos()
    for name, strengths in corruptions().items():
        sources |= {f"{name}-{strength}": corrupted(t) for strength, t in strengths.items()}
    print(f"\nscoring {len(sources)} sets (cached in {work / 'outputs.npz'})")
    everything = outputs(work, predictor, sources)
    sets = {k: v for k, v in everything.items() if k != "train"}
    print(
        f"\nlensor-coco: trained on {len(trained)} photos (train split, grouped folds), "
        f"held out {len(heldout)} (val + test) and the same under 7 corruptions at 2 strengths "
        "(blur, light and contrast also past judging), "
        f"{len(sets['non-car']['usable'])} non-car images; MobileNetV2 at {args.size} px"
    )
    default = TrustConfig()
    splits = run_splits(run)
    train_features = everything["train"][FEATURES]
    distribution_table(train_features, splits, sets, (0.99, default.coverage))
    check = DistributionCheck.fit(train_features, splits, default.distribution, default.coverage)
    print(f"\ndeclined with the default ({default.distribution}), by cause:")
    refused = declined(check, sets)

    images, oof = RunDir(run).read_oof(tasks)
    oof_targets = RunDir(run).read_truth(tasks, images)
    calibrated = {
        t.name: calibrate(predictor.meta.calibration.get(t.name), oof[t.name]) for t in tasks
    }
    review = ReviewPolicy.fit(
        tasks, oof_targets, calibrated, default.review_coverage, default.review_risk
    )
    truth = {t.name: heldout.targets(t) for t in tasks}
    targets = {name: truth for name in sets}
    answers_table(predictor, review, sets, targets, refused)
    calibration_table(predictor, sets["held-out"], truth)


if __name__ == "__main__":
    main()
