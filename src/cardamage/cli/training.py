"""Commands that make data and models: `synth`, `train`, `evaluate`, `report`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cardamage.errors import CardamageError


def _synth_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="draw a labelled data set of car photos (the embedded default)"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=1825)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: one a core)"
    )
    p.set_defaults(run=_synth)


def _synth(args: argparse.Namespace) -> int:
    from cardamage.data.synthetic import generate_dataset

    if args.n < 1 or args.size < 32 or args.workers < 1:
        raise CardamageError("--n and --workers must be at least 1 and --size at least 32")
    manifest = generate_dataset(
        args.out, n=args.n, size=args.size, seed=args.seed, progress=True, workers=args.workers
    )
    print(f"wrote {args.n} images and {manifest}")
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="k-fold cross-validation training; writes a run directory")
    p.add_argument("--config", type=Path, help="JSON file with any of the options below")
    p.add_argument("--data", type=Path, help="manifest CSV (tidy or the original's format)")
    p.add_argument("--images", type=Path, help="image root (default: the manifest's folder)")
    p.add_argument("--out", type=Path, help="run directory to create")
    p.add_argument("--backbone", help="mobilenet, mobilenetv2, resnet50v2, efficientnetv2b0, ...")
    p.add_argument("--weights", help="'imagenet' (download), 'none', or a Keras weights file")
    p.add_argument("--alpha", type=float, help="width multiplier of MobileNet backbones")
    p.add_argument("--image-size", type=int)
    p.add_argument(
        "--scales",
        type=int,
        nargs="+",
        help="also run on the photo shrunk by these factors, e.g. --image-size 480 --scales 1 3",
    )
    p.add_argument(
        "--layout",
        choices=["shared", "per_task"],
        help="one backbone for all tasks (default) or one per task, as the original",
    )
    p.add_argument("--folds", type=int)
    p.add_argument("--epochs", type=int, help="most epochs of the head phase")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--views", type=int, help="cached views per image (1 clean + augmented)")
    p.add_argument(
        "--tune-top",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the backbone's top stage with the heads, on cached activations",
    )
    p.add_argument(
        "--fine-tune-layers", type=int, help="top backbone layers to fine-tune (-1: all)"
    )
    p.add_argument("--fine-tune-epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--overwrite", action="store_true", default=None)
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue an interrupted run from its last finished fold",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        default=None,
        help="train on the valid rows; write the bad ones to the run directory",
    )
    p.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    from cardamage.config import load_train_config
    from cardamage.train.crossval import cross_validate

    overrides = {
        k: v for k, v in vars(args).items() if k not in ("config", "run", "command", "resume")
    }
    if args.resume is not None:
        given = sorted(k for k, v in overrides.items() if v is not None)
        if given or args.config:
            raise CardamageError(f"--resume continues a run as it was configured: drop {given}")
        from cardamage.train.rundir import RunDir

        cfg = RunDir(args.resume).resume_config()
    else:
        cfg = load_train_config(args.config, overrides)
    summary = cross_validate(cfg, resume=args.resume is not None)
    print(f"\nrun directory: {cfg.out}")
    for name, task in summary["tasks"].items():
        h = task["headline"]
        print(
            f"  {name}: {h['metric']} per fold {[round(v, 3) for v in h['per_fold']]}, "
            f"mean {h['mean']:.3f}; out-of-fold macro-F1 {task['out_of_fold']['macro_f1']:.3f}"
        )
    print(f"  best fold: {summary['best_fold']}")
    print(f"  model ({summary['final_model']}): {cfg.out / 'model'}")
    print(f"  report: {cfg.out / 'report.html'}")
    return 0


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a trained model on a labelled set")
    p.add_argument("--model", type=Path, required=True, help="run directory or model directory")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--images", type=Path)
    p.add_argument(
        "--out",
        type=Path,
        help="write evaluation.json here (default: RUN/heldout, shown in the run's report)",
    )
    p.add_argument(
        "--show", type=int, default=0, help="print the first N predictions with the truth"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from cardamage.evaluate.heldout import evaluate_model, record_evaluation
    from cardamage.inference.predictor import Predictor

    predictor = Predictor.load(args.model)
    metrics, rows = evaluate_model(
        predictor, args.data, args.images or args.data.parent, args.batch_size
    )
    if args.show:
        _print_rows(rows[: args.show], [t.name for t in predictor.tasks])
    print(f"\nheld-out scores on {len(rows)} images:")
    for task in predictor.tasks:
        m = metrics[task.name]
        main = (
            f"accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}"
            if task.multiclass
            else f"mAP {m['mAP']:.3f}, exact match {m['exact_match']:.3f}"
        )
        print(f"  {task.name:<12} macro-F1 {m['macro_f1']:.3f}, {main}")
    for path in record_evaluation(args.model, args.out, args.data, metrics):
        print(f"wrote {path}")
    return 0


def _print_rows(rows: list[dict], names: list[str]) -> None:
    width = max(len(r["image"]) for r in rows)
    print(f"{'image':<{width}}  " + "  ".join(f"{n + ' (truth -> predicted)':<34}" for n in names))
    for row in rows:
        cells = []
        for name in names:
            truth, predicted = row[name]
            mark = " " if truth == predicted else "*"
            cells.append(f"{mark}{truth or '-'} -> {predicted or '-'}"[:34].ljust(34))
        print(f"{row['image']:<{width}}  " + "  ".join(cells))


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="(re)write a run's self-contained HTML report")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--images", type=Path, help="where the photos are now, if they moved")
    p.add_argument("--worst", type=int, default=24, help="mistakes shown in the gallery")
    p.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    from cardamage.evaluate.html_report import write_html_report

    print(f"wrote {write_html_report(args.run, image_root=args.images, worst=args.worst)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _synth_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _report_parser(sub)
