"""Benchmark of knowing when not to answer, on real photos (lensor-coco) and non-car images.

Trains on lensor-coco's train split (grouped folds, cached features, the 224 px recipe unless
told otherwise), then scores its val and test splits (photos of other source cars) and non-car
images (random textures, flat colours, rendered text, shapes, and scikit-image's natural photos)
with the shipped model, and prints side by side for both distribution scores (knn, mahalanobis,
fitted on the same training features and folds):
  - the share of genuine held-out photos flagged (the setting: 1 - coverage),
  - the share of non-car images flagged, and the AUROC between the two,
and, for the calibration, the held-out ECE of the raw and the calibrated scores. Finally what a
model trained on the embedded generator's cars says about lensor-coco's real photos.
Targets (issue 16): AUROC >= 0.95; genuine photos flagged within 3 points of the setting; ECE at
least halved. Skips when ../shared is absent.

    python bench/trust.py [--size 224] [--synth-n 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' non-car images

from real_data import LENSOR, WEIGHTS, import_lensor
from trust_support import constructed, natural_photos

from cardamage.config import load_train_config
from cardamage.data.manifest import load_manifest
from cardamage.data.synthetic import generate_dataset
from cardamage.evaluate.calibration import reliability
from cardamage.inference.predictor import Predictor
from cardamage.model.metadata import FEATURES
from cardamage.train.crossval import cross_validate
from cardamage.train.rundir import RunDir
from cardamage.trust.calibrators import calibrate
from cardamage.trust.distribution import METHODS, DistributionCheck


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--coverage", type=float, default=0.95)
    p.add_argument("--synth-n", type=int, default=600, help="generated photos for the last part")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work", type=Path)
    return p.parse_args()


def train(data: Path, config: Path | None, out: Path, args, **extra) -> Path:
    options = {
        "data": data,
        "out": out,
        "backbone": "mobilenetv2",
        "weights": str(WEIGHTS),
        "image_size": args.size,
        "folds": args.folds,
        "seed": args.seed,
        "trust_coverage": args.coverage,
        "cache_dir": out.parent / "cache",
        "overwrite": True,
        "head_units": 0,
        "dropout": 0.0,
        "standardize": True,
        "head_l2": 0.1,
    } | extra
    cross_validate(load_train_config(config, options))
    return out


def features_and_scores(predictor: Predictor, images: list) -> dict[str, np.ndarray]:
    """The engine's raw outputs (scores before calibration, and the features)."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(images), 32):
        chunk = images[start : start + 32]
        pixels = np.stack([predictor.decode(image).pixels for image in chunk]).astype(np.float32)
        for name, value in predictor.engine(pixels).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def distribution_table(run: Path, train_features, genuine, strangers, coverage: float) -> None:
    folds = json.loads((run / "folds.json").read_text())
    images = RunDir(run).read_oof(RunDir(run).model_meta().tasks)[0]
    index = {image: i for i, image in enumerate(images)}
    splits = [
        (
            np.array([index[x] for x in images if x not in set(f["validation"])]),
            np.array([index[x] for x in f["validation"]]),
        )
        for f in folds
    ]
    print(f"\n{'distribution check':<22}{'genuine flagged':>17}{'non-car flagged':>17}{'AUROC':>8}")
    for method in METHODS:
        check = DistributionCheck.fit(train_features, splits, method, coverage)
        g = np.array([not v.passed for v in check.verdicts(genuine)])
        s = np.array([not v.passed for v in check.verdicts(strangers)])
        raw = np.concatenate([check.density.score(genuine), check.density.score(strangers)])
        truth = np.r_[np.ones(len(genuine)), np.zeros(len(strangers))]
        print(f"{method:<22}{g.mean():>16.1%} {s.mean():>16.1%} {roc_auc_score(truth, raw):>7.3f}")
    print(f"(setting: {1 - coverage:.0%} of genuine photos flagged)")


def calibration_table(predictor: Predictor, raw: dict, targets: dict) -> None:
    print(f"\n{'held-out ECE':<22}{'raw':>8}{'calibrated':>12}")
    for task in predictor.tasks:
        fitted = predictor.meta.calibration.get(task.name)
        before = reliability(targets[task.name], raw[task.name], multiclass=task.multiclass)
        after = reliability(
            targets[task.name], calibrate(fitted, raw[task.name]), multiclass=task.multiclass
        )
        print(f"{task.name:<22}{before['ece']:>8.3f}{after['ece']:>12.3f}")


def main() -> None:
    if not LENSOR.exists() or not WEIGHTS.exists():
        print(f"skipped: {LENSOR} or {WEIGHTS} is absent")
        return
    args = parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-trust-"))
    manifest_csv, config = import_lensor(work)
    rows = manifest_csv.read_text().splitlines()
    header, body = rows[0], rows[1:]
    (work / "train.csv").write_text(
        "\n".join([header, *[r for r in body if r.startswith("train/")]]) + "\n"
    )
    (work / "heldout.csv").write_text(
        "\n".join([header, *[r for r in body if not r.startswith("train/")]]) + "\n"
    )
    cfg_extra = {"images": LENSOR / "images"}
    run = train(work / "train.csv", config, work / "lensor", args, **cfg_extra)

    predictor = Predictor.load(run)
    tasks = predictor.tasks
    trained, _ = load_manifest(work / "train.csv", LENSOR / "images", tasks)
    heldout, _ = load_manifest(work / "heldout.csv", LENSOR / "images", tasks)
    strangers = constructed(224) + natural_photos()
    train_out = features_and_scores(predictor, trained.paths())
    held_out = features_and_scores(predictor, heldout.paths())
    stranger_out = features_and_scores(predictor, strangers)
    print(
        f"\nlensor-coco: trained on {len(trained)} photos (train split, grouped folds), "
        f"held out {len(heldout)} (val + test), {len(strangers)} non-car images; "
        f"MobileNetV2 at {args.size} px"
    )
    distribution_table(
        run, train_out[FEATURES], held_out[FEATURES], stranger_out[FEATURES], args.coverage
    )
    calibration_table(predictor, held_out, {t.name: heldout.targets(t) for t in tasks})
    summary = json.loads((run / "summary.json").read_text())
    for name, entry in summary["tasks"].items():
        c = entry.get("calibration")
        if c:
            before, after = c["ece_before"], c["ece_after"]
            print(f"{name:<22}out-of-fold ECE {before:.3f} -> {after:.3f} (cross-fitted)")

    synth = generate_dataset(work / "synth", n=args.synth_n, size=224, seed=0)
    synth_run = train(synth, None, work / "synth-run", args, image_size=224)
    generated = Predictor.load(synth_run)
    real = [p.trust for p in generated.predict(trained.paths() + heldout.paths())]
    flagged = np.mean(
        [t.in_distribution is not None and not t.in_distribution.passed for t in real]
    )
    abstained = np.mean([t.abstain for t in real])
    print(
        f"\na model trained on {args.synth_n} generated cars, on lensor-coco's {len(real)} real "
        f"photos: {flagged:.1%} flagged unlike its training photos, {abstained:.1%} abstained"
    )


if __name__ == "__main__":
    main()
