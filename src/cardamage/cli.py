"""`cardamage synth | train | evaluate | predict`: thin commands over the library.

Heavy imports (TensorFlow) happen inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cardamage.errors import CardamageError
from cardamage.quiet import import_keras_quietly

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
        from cardamage.train.rundir import resume_config

        cfg = resume_config(args.resume)
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
    print(f"  best fold: {summary['best_fold']}; chosen model: {cfg.out / 'model'}")
    return 0


def _synth_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth", help="draw a labelled data set of car photos (the embedded default)"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=1825)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_synth)


def _synth(args: argparse.Namespace) -> int:
    from cardamage.data.synthetic import generate_dataset

    if args.n < 1 or args.size < 32:
        raise CardamageError("--n must be at least 1 and --size at least 32")
    manifest = generate_dataset(args.out, n=args.n, size=args.size, seed=args.seed, progress=True)
    print(f"wrote {args.n} images and {manifest}")
    return 0


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a trained model on a labelled set")
    p.add_argument("--model", type=Path, required=True, help="run directory or model directory")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--images", type=Path)
    p.add_argument("--out", type=Path, help="write evaluation.json here")
    p.add_argument(
        "--show", type=int, default=0, help="print the first N predictions with the truth"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from cardamage.evaluate.heldout import evaluate_model
    from cardamage.evaluate.report import write_summary_json
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
    if args.out:
        write_summary_json(args.out / "evaluation.json", {"data": str(args.data), "tasks": metrics})
        print(f"wrote {args.out / 'evaluation.json'}")
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


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify photos and folders; streams csv, json or jsonl")
    p.add_argument("paths", nargs="+", type=Path, help="image files or folders")
    p.add_argument("--model", type=Path, default=Path("runs/demo"), help="run or model directory")
    p.add_argument("--engine", default="keras", help="keras, onnx or onnx-int8")
    p.add_argument("--recursive", action="store_true", help="look into sub-folders")
    p.add_argument("--format", choices=["csv", "json", "jsonl"], default="csv")
    p.add_argument("--output", type=Path, help="write here instead of standard output")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--explain", type=Path, metavar="DIR", help="write heatmap overlays here")
    p.set_defaults(run=_predict)


def _predict(args: argparse.Namespace) -> int:
    from cardamage.inference.batch import predict_files
    from cardamage.inference.predictor import Predictor
    from cardamage.io import atomic_path

    predictor = Predictor.load(args.model, engine=args.engine)
    if args.output is None:
        ok, failed = predict_files(
            predictor,
            args.paths,
            args.recursive,
            args.format,
            sys.stdout,
            args.batch_size,
            args.explain,
        )
    else:
        with atomic_path(args.output) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
            ok, failed = predict_files(
                predictor,
                args.paths,
                args.recursive,
                args.format,
                out,
                args.batch_size,
                args.explain,
            )
    print(f"predicted {ok} image(s), {failed} could not be read", file=sys.stderr)
    return 0 if ok or not failed else 1


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page and REST API on a trained model")
    p.add_argument("--config", type=Path, help="application_config.json (its 'serve' section)")
    p.add_argument("--model", type=Path, help="run or model directory (instead of --config)")
    p.add_argument("--engine", help="keras, onnx or onnx-int8")
    p.add_argument("--host", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, help="default 8000")
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from cardamage.serve.server import run

    if args.config is None and args.model is None:
        raise CardamageError("give --model RUN or --config application_config.json")
    predictor = None
    if args.config is not None and args.model is None:
        from cardamage.config import load_app_config

        cfg = load_app_config(args.config)
        if cfg.model is None:  # the original's three per-task models
            from cardamage.inference.legacy import load_original

            predictor = load_original(cfg)
    with contextlib.suppress(KeyboardInterrupt):  # a normal stop: in-flight requests finished
        run(args.model, args.host, args.port, args.engine, args.config, predictor=predictor)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cardamage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _synth_parser,
        _train_parser,
        _evaluate_parser,
        _predict_parser,
        _serve_parser,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "synth" and not str(getattr(args, "engine", "keras")).startswith("onnx"):
        import_keras_quietly()
    try:
        return args.run(args)
    except CardamageError as e:
        print(f"cardamage: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cardamage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
