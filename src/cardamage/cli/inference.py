"""Commands that use a trained model: `predict`, `serve`, `export`."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cardamage.errors import CardamageError
from cardamage.quiet import import_keras_unless_onnx

if TYPE_CHECKING:
    from cardamage.inference.predictor import Predictor
    from cardamage.serve.settings import ServeSettings

#: What `predict` classifies with when given neither --model nor --config.
DEFAULT_MODEL = Path("runs/demo")


#: `cardamage predict` exit status when some files could not be read (their rows say why).
SOME_UNREADABLE = 1

PREDICT_EPILOG = f"""exit status:
  0  every photo was read and predicted
  {SOME_UNREADABLE}  some or all files could not be read: their rows carry the error
  2  the command could not run: no trained model, a bad option or another error"""


ASSESS_EPILOG = f"""exit status:
  0  every photo was read and every claim assessed
  {SOME_UNREADABLE}  some photos could not be read, or some claims had no usable photo: their
     rows carry the error (a claim is assessed from the photos that could be read)
  2  the command could not run: no trained model, a bad option or another error"""


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify photos and folders; streams csv, json or jsonl",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="+",
        help="image files or folders; with --ray also URIs (s3://, gs://), a manifest (.csv) or "
        "a list of photos (.txt, one a line)",
    )
    model_options(p, "keras (default; onnx with --ray), onnx or onnx-int8")
    p.add_argument("--recursive", action="store_true", help="look into sub-folders")
    p.add_argument(
        "--format",
        choices=["csv", "json", "jsonl", "parquet"],
        help="csv (default): one row per photo with a readable summary, each task's labels and "
        "every label's score; json: one array of objects; jsonl: one object a line; with --ray "
        "parquet (default), csv or jsonl files of csv's columns",
    )
    p.add_argument(
        "--output", help="write here instead of standard output (with --ray: a folder or URI)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--explain",
        type=Path,
        metavar="DIR",
        help="write heatmap overlays here, named by each photo's path, with DIR/index.csv",
    )
    _ray_flags(p)
    p.set_defaults(run=_predict)


def model_options(
    p: argparse.ArgumentParser, engines: str = "keras (default), onnx or onnx-int8"
) -> None:
    p.add_argument(
        "--model",
        type=Path,
        help="run or model directory (default: runs/demo, the model `make demo` trains)",
    )
    p.add_argument("--engine", help=engines)
    p.add_argument("--config", type=Path, help="application_config.json: model, engine, thresholds")


def load_predictor(args: argparse.Namespace) -> Predictor:
    """The model --model or --config name (runs/demo when neither), Keras imported quietly."""
    from cardamage.config import load_app_config
    from cardamage.inference.legacy import load_app_predictor

    model = args.model or (None if args.config else DEFAULT_MODEL)
    cfg = load_app_config(args.config, {"model": model, "engine": args.engine})
    import_keras_unless_onnx(cfg.predictor_engine)
    return load_app_predictor(cfg)


def _index_location(args: argparse.Namespace) -> str | None:
    """--index, else the config's photo_index, else None (no reused-photo check)."""
    if args.index is not None or args.config is None:
        return args.index
    from cardamage.config import load_app_config

    return load_app_config(args.config, {"model": args.model}).photo_index


def _ray_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group('Ray (pip install "cardamage[ray]")')
    g.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="score on a Ray cluster (auto, HOST:PORT, ray://HOST:10001); no ADDRESS: a Ray "
        "started on this machine. Needs --output",
    )
    g.add_argument("--actors", type=int, help="model actors (default: one per CPU or GPU)")
    g.add_argument("--cpus-per-actor", type=float, default=1.0, help="and its ONNX threads")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, help="e.g. 1, or 0.5 to share")


def _predict(args: argparse.Namespace) -> int:
    from cardamage.config import load_app_config
    from cardamage.inference.legacy import load_app_predictor

    model = args.model or (None if args.config else DEFAULT_MODEL)
    engine = args.engine or ("onnx" if args.ray else None)
    cfg = load_app_config(args.config, {"model": model, "engine": engine})
    import_keras_unless_onnx(cfg.predictor_engine)
    if args.ray is not None:
        return _predict_on_ray(args, cfg)
    if args.format == "parquet":
        raise CardamageError("--format parquet is written by Ray: add --ray")
    return _predict_here(args, load_app_predictor(cfg))


def _predict_on_ray(args: argparse.Namespace, cfg) -> int:
    from cardamage.distributed.cluster import require_ray

    require_ray()  # before anything slower: the missing extra is the first thing to say
    from cardamage.distributed.predict import RayOptions, predict_on_ray
    from cardamage.inference.legacy import load_app_predictor

    fmt = args.format or "parquet"
    if fmt == "json" or args.explain is not None or args.output is None:
        raise CardamageError("--ray writes --output FOLDER as parquet, csv or jsonl, no --explain")
    if cfg.model is None:
        raise CardamageError("--ray scores a trained run (--model): not the original's models")
    options = RayOptions(
        args.ray, args.actors, args.cpus_per_actor, args.gpus_per_actor, args.batch_size
    )
    done = predict_on_ray(
        load_app_predictor(cfg), args.paths, args.recursive, args.output, fmt, options
    )
    rate = (done.predicted + done.failed) / max(done.seconds, 1e-9)
    print(
        f"predicted {done.predicted} image(s), {done.failed} could not be read; wrote {fmt} "
        f"files under {args.output} in {done.seconds:.1f} s ({rate:.1f} images/s)",
        file=sys.stderr,
    )
    return SOME_UNREADABLE if done.failed else 0


def _predict_here(args: argparse.Namespace, predictor: Predictor) -> int:
    from cardamage.inference.batch import predict_files
    from cardamage.io import atomic_path

    paths = [Path(p) for p in args.paths]
    fmt = args.format or "csv"
    if args.output is None:
        ok, failed = predict_files(
            predictor,
            paths,
            args.recursive,
            fmt,
            sys.stdout,
            args.batch_size,
            args.explain,
        )
    else:
        with (
            atomic_path(Path(args.output)) as tmp,
            open(tmp, "w", encoding="utf-8", newline="") as out,
        ):
            ok, failed = predict_files(
                predictor,
                paths,
                args.recursive,
                fmt,
                out,
                args.batch_size,
                args.explain,
            )
    print(f"predicted {ok} image(s), {failed} could not be read", file=sys.stderr)
    return SOME_UNREADABLE if failed else 0


def _assess_parser(sub: argparse._SubParsersAction) -> None:
    from cardamage.inference.claims import DEFAULT_RULE, RULES

    p = sub.add_parser(
        "assess",
        help="assess claims (several photos of one car): one row per claim, each photo's beside",
        epilog=ASSESS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "folders", nargs="*", type=Path, help="a folder per claim, or one folder of such folders"
    )
    p.add_argument("--manifest", type=Path, help="a CSV with 'image' and 'claim' columns instead")
    p.add_argument("--images", type=Path, help="the manifest's image root (default: its folder)")
    model_options(p)
    p.add_argument("--out", type=Path, required=True, help="writes claims.<fmt>, photos.<fmt>")
    p.add_argument("--format", choices=["csv", "json", "jsonl"], default="csv")
    p.add_argument(
        "--rule",
        choices=RULES,
        default=DEFAULT_RULE,
        help=f"how photos' severities combine (default {DEFAULT_RULE}, measured best)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--index",
        metavar="FILE_OR_URL",
        help="photo index: a SQLite file (created on first use) or a postgresql:// URL; each "
        "photo is searched among other claims' (seen_before) and recorded (default: the "
        "config's photo_index; none: no check)",
    )
    p.set_defaults(run=_assess)


def _assess(args: argparse.Namespace) -> int:
    from cardamage.inference.assess import assess_files, claims_from_folders, claims_from_manifest
    from cardamage.io import atomic_path

    if (args.manifest is None) == (not args.folders):
        raise CardamageError("give either folders (a folder per claim) or --manifest photos.csv")
    if args.manifest is not None:
        claims = claims_from_manifest(args.manifest, args.images)
    else:
        claims = claims_from_folders(args.folders)
    predictor, location = load_predictor(args), _index_location(args)
    reuse = None
    if location is not None:
        from cardamage.inference.photo_index.check import ReuseCheck
        from cardamage.inference.photo_index.fingerprint import feature_space

        reuse = ReuseCheck(location, feature_space(predictor.meta))
        predictor.fingerprint = True
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [args.out / f"{name}.{args.format}" for name in ("claims", "photos")]
    with contextlib.ExitStack() as stack:
        files = [
            stack.enter_context(
                open(stack.enter_context(atomic_path(path)), "w", encoding="utf-8", newline="")
            )
            for path in paths
        ]
        done = assess_files(
            predictor, claims, args.format, *files, args.batch_size, args.rule, reuse
        )
    if reuse is not None:
        reuse.close()
    for line in done.reused:
        print(f"reused photos: {line}", file=sys.stderr)
    if done.index_warning:
        print(f"cardamage: warning: {done.index_warning}", file=sys.stderr)
    print(
        f"assessed {done.assessed} claim(s) ({done.to_review} to review), "
        f"{done.unassessed} without a usable photo, "
        f"{done.unreadable} photo(s) unreadable: {paths[0]}, {paths[1]}",
        file=sys.stderr,
    )
    return SOME_UNREADABLE if done.unassessed or done.unreadable else 0


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page and REST API on a trained model")
    p.add_argument("--config", type=Path, help="application_config.json (its 'serve' section)")
    p.add_argument("--model", type=Path, help="run or model directory (instead of --config)")
    p.add_argument("--engine", help="keras, onnx or onnx-int8")
    p.add_argument("--host", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, help="default 8000")
    p.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    from cardamage.serve.server import serve

    settings, predictor = serve_settings(args)
    # uvicorn re-raises SIGTERM after its graceful shutdown: make it a KeyboardInterrupt (exit 0)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):  # a normal stop: in-flight requests finished
        serve(settings, predictor)
    return 0


def serve_settings(args: argparse.Namespace) -> tuple[ServeSettings, Predictor | None]:
    """The server's settings from --config and the flags, and the original's three models when
    the config names them; Keras is imported only for an engine that needs it."""
    from cardamage.config import load_app_config
    from cardamage.inference.legacy import load_app_predictor
    from cardamage.serve.settings import load_settings, settings_from

    if args.config is None and args.model is None:
        raise CardamageError("give --model RUN or --config application_config.json")
    flags = {"model": args.model, "engine": args.engine, "host": args.host, "port": args.port}
    if args.config is None:
        settings = load_settings(None, flags)
        import_keras_unless_onnx(settings.engine)
        return settings, None
    cfg = load_app_config(args.config, flags)
    import_keras_unless_onnx(cfg.predictor_engine)
    return settings_from(cfg), None if cfg.model is not None else load_app_predictor(cfg)


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model: ONNX (and int8), SavedModel, TFLite")
    p.add_argument("model", type=Path, help="run or model directory")
    p.add_argument("--format", choices=["onnx", "savedmodel", "tflite"], default="onnx")
    p.add_argument("--int8", action="store_true", help="also quantise to int8 (calibrated)")
    p.add_argument(
        "--calibration", type=Path, nargs="+", help="photos or folders that set int8 ranges"
    )
    p.add_argument("--out", type=Path, help="default: inside the model directory")
    p.set_defaults(run=_export)


#: Enough photos to set int8 activation ranges; more only costs time.
CALIBRATION_IMAGES = 64


def _export(args: argparse.Namespace) -> int:
    from itertools import islice

    from cardamage.inference.batch import find_images
    from cardamage.inference.export import export_model

    calibration = None
    if args.calibration:
        calibration = list(islice(find_images(args.calibration, True), CALIBRATION_IMAGES))
    path = export_model(args.model, args.format, args.out, args.int8, calibration)
    print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _predict_parser(sub)
    _assess_parser(sub)
    _serve_parser(sub)
    _export_parser(sub)
