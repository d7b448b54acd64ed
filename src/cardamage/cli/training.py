"""Commands that make data and models: `synth`, `train`, `evaluate`, `report`."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cardamage.config import FLAT_KEYS, TrainConfig, flat_name, train_fields
from cardamage.errors import CardamageError

if TYPE_CHECKING:
    from cardamage.reports.heldout import Evaluation
    from cardamage.train.features import RemoteFill


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
    p.add_argument(
        "--claims",
        action="store_true",
        help="draw --n claims instead of photos: each one car seen from 2-6 views; writes "
        "labels.csv with a claim column and the cars' labels in claims.csv",
    )
    p.set_defaults(run=_synth)


def _synth(args: argparse.Namespace) -> int:
    from cardamage.synthetic import generate_claims, generate_dataset

    if args.n < 1 or args.size < 32 or args.workers < 1:
        raise CardamageError("--n and --workers must be at least 1 and --size at least 32")
    options = {"n": args.n, "size": args.size, "seed": args.seed, "workers": args.workers}
    if args.claims:
        manifest, cars = generate_claims(args.out, progress=True, **options)
        print(f"wrote {args.n} claims: the photos' labels in {manifest}, the cars' in {cars}")
        return 0
    manifest = generate_dataset(args.out, progress=True, **options)
    print(f"wrote {args.n} images and {manifest}")
    return 0


def _flag_options(field: FieldInfo) -> dict[str, Any] | None:
    """argparse options for a described scalar field; None for the rest (tasks, augment), which
    only a config file gives."""
    kind = field.annotation
    if field.description is None:
        return None
    if get_origin(kind) in (Union, UnionType):  # `Path | None`: the flag gives the value
        kind = next(k for k in get_args(kind) if k is not type(None))
    default = field.get_default(call_default_factory=True)
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    shown = "" if default in (None, PydanticUndefined) else f" (default: {default})"
    options: dict[str, Any] = {"help": f"{field.description}{shown}"}
    if kind is bool:
        return options | {"action": argparse.BooleanOptionalAction}
    if get_origin(kind) is Literal:
        return options | {"choices": get_args(kind)}
    if get_origin(kind) is tuple:
        return options | {"type": get_args(kind)[0], "nargs": "+"}
    if kind in (int, float, str, Path):
        const = (field.json_schema_extra or {}).get("flag_const")  # the flag alone gives it
        extra = {} if const is None else {"nargs": "?", "const": const}
        return options | {"type": kind} | extra
    return None


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per option of the train schema, named as in flat files (`--fine-tune-layers`),
    grouped by section, its help the field's description: flags and schema cannot drift."""
    groups = {}
    for section, name, field in train_fields():
        options = _flag_options(field)
        if options is None:
            continue
        if section not in groups:
            groups[section] = p.add_argument_group(f"{section} (section '{section}' of --config)")
        flag = flat_name(section, name)
        groups[section].add_argument(f"--{flag.replace('_', '-')}", dest=flag, **options)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="k-fold cross-validation training; writes a run directory")
    p.add_argument(
        "--config",
        type=Path,
        action="append",
        help="JSON file with any of the options below, by section; several merge in order",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue an interrupted run from its last finished fold (a finished run is left "
        "as it is)",
    )
    add_train_flags(p)
    p.set_defaults(run=_train)


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The train options given as flags, by flat name (`fine_tune_layers`)."""
    return {k: getattr(args, k) for k in FLAT_KEYS if getattr(args, k, None) is not None}


def _train(args: argparse.Namespace) -> int:
    from cardamage.reports.html_report import write_html_report
    from cardamage.runs.rundir import RunDir
    from cardamage.train.crossval import cross_validate

    cfg = _train_config(args)
    run = RunDir(cfg.run.out)
    # a finished run resumed keeps its report; one the kill left unwritten is written
    keeps_report = args.resume is not None and run.finished and run.report_file.is_file()
    summary = cross_validate(cfg, resume=args.resume is not None, remote=_remote_fill(cfg))
    if not keeps_report:
        write_html_report(run.path)
    print(f"\nrun directory: {cfg.run.out}")
    for name, task in summary.tasks.items():
        h = task.headline
        print(
            f"  {name}: {h.metric} per fold {[round(v, 3) for v in h.per_fold]}, "
            f"mean {h.mean:.3f}; out-of-fold macro-F1 {task.out_of_fold['macro_f1']:.3f}"
        )
    print(f"  best fold: {summary.best_fold}")
    print(f"  model ({summary.final_model}): {run.model_dir}")
    print(f"  report: {run.report_file}")
    _score_test_split(cfg.run.out)
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The flags over --config files, or the config an interrupted run started with."""
    from cardamage.config import load_train_config
    from cardamage.runs.rundir import RunDir

    overrides = train_overrides(args)
    if args.resume is None:
        return load_train_config(args.config, overrides)
    given = sorted(overrides)
    if given or args.config:
        raise CardamageError(f"--resume continues a run as it was configured: drop {given}")
    return RunDir(args.resume).resume_config()


def _remote_fill(cfg: TrainConfig) -> RemoteFill | None:
    """`--ray`: the cached features extracted by Ray actors (the extra checked first)."""
    if cfg.run.ray is None:
        return None
    from cardamage.distributed.cluster import require_ray

    require_ray()  # the missing extra said before the manifest is read
    from cardamage.distributed.features import RayFill

    return functools.partial(RayFill, cfg.run.ray)


def _score_test_split(run: Path) -> None:
    """The data's test split scored by the final model, as `cardamage evaluate` would."""
    from cardamage.reports.heldout import evaluate_test_split
    from cardamage.runs.rundir import RunDir

    scored = evaluate_test_split(run)
    if scored is not None:
        result, written = scored
        _print_evaluation(result, RunDir(run).model_meta().tasks, "test split")
        for path in written:
            print(f"wrote {path}")


EVALUATE_EPILOG = """exit status:
  0  every photo of --data was scored
  2  nothing was scored: a bad manifest row (named by line), photo, option or model"""


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a labelled set",
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", type=Path, required=True, help="run directory or model directory")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="the labelled photos: a manifest CSV as `train --data` takes (image column, one "
        "column per task; with a claim column, also scored per claim)",
    )
    p.add_argument(
        "--images",
        type=Path,
        help="the folder the manifest's image paths are relative to (default: --data's folder)",
    )
    p.add_argument(
        "--engine",
        default="keras",
        help="keras (default), onnx or onnx-int8: score with the exported model the server "
        "would run (`cardamage export` writes it)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="write evaluation.json here (default: RUN/heldout, or RUN/heldout_claims for a "
        "--data with a claim column; both shown in the run's report)",
    )
    p.add_argument(
        "--show", type=int, default=0, help="print the first N predictions with the truth"
    )
    p.add_argument(
        "--claim-labels",
        type=Path,
        help="the cars' labels (claim,<task columns>, as synth --claims writes in claims.csv) "
        "for a --data with a claim column; default: what each claim's photos add up to",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from cardamage.quiet import import_keras_unless_onnx

    import_keras_unless_onnx(args.engine)
    from cardamage.inference.predictor import Predictor
    from cardamage.reports.heldout import evaluate_model, record_evaluation

    predictor = Predictor.load(args.model, args.engine)
    result = evaluate_model(
        predictor, args.data, args.images or args.data.parent, args.batch_size, args.claim_labels
    )
    if args.show:
        _print_rows(result.rows[: args.show], [t.name for t in predictor.tasks])
    _print_evaluation(result, predictor.tasks)
    for path in record_evaluation(args.model, args.out, args.data, result):
        print(f"wrote {path}")
    return 0


def _print_evaluation(result: Evaluation, tasks: list, what: str = "held-out") -> None:
    print(f"\n{what} scores on {len(result.rows)} images:")
    _print_scores(tasks, result.metrics)
    print(abstention_line(result.abstention, tasks))
    claims = result.claims
    if claims is not None:
        print(f"\nper claim ({claims['n_claims']} claims, photos combined by {claims['rule']}):")
        _print_scores(tasks, claims["tasks"])
        review = claim_review_line(claims, tasks)
        if review:
            print(review)


def _print_scores(tasks: list, metrics: dict) -> None:
    for task in tasks:
        m = metrics[task.name]
        main = (
            f"accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}"
            if task.multiclass
            else f"mAP {m['mAP']:.3f}, exact match {m['exact_match']:.3f}"
        )
        print(f"  {task.name:<12} macro-F1 {m['macro_f1']:.3f}, {main}")


def abstention_line(abstention: dict, tasks) -> str:
    """Both questions, one line each: 'usable photos: answered 285 of 300 (95 %), severity
    accuracy 0.881 on them (0.863 on all); declined: 10 does not look like a photo of a car, 5
    too blurred to judge' and 'sure enough: severity answered without review for 230 of 285,
    accuracy 0.930 on them'."""
    n, answered = abstention["n"], abstention["answered"]
    line = f"usable photos: answered {answered} of {n} ({abstention['coverage']:.0%})"
    main = next((t for t in tasks if t.multiclass), None)
    entry = abstention["tasks"].get(main.name, {}) if main else {}
    if "answered" in entry:
        line += (
            f", {main.name} accuracy {entry['answered']['accuracy']:.3f} on them "
            f"({entry['all']['accuracy']:.3f} on all)"
        )
    if abstention["reasons"]:
        line += "; declined: " + ", ".join(f"{n} {k}" for k, n in abstention["reasons"].items())
    if "sure" in entry:
        line += f"\nsure enough: {main.name} answered without review for {entry['sure']} of "
        line += f"{answered}"
        if "without_review" in entry:
            line += f", accuracy {entry['without_review']['accuracy']:.3f} on them"
    return line


def claim_review_line(claims: dict, tasks) -> str | None:
    """'sure enough: severity decided without review for 61 of 80 claims, accuracy 0.902 on
    them (0.850 on all)'."""
    main = next((t for t in tasks if t.multiclass), None)
    review = claims.get("review", {}).get(main.name) if main else None
    if review is None:  # an evaluation written before claims were reviewed
        return None
    assessed = claims["n_claims"] - claims["unassessed"]
    line = f"sure enough: {main.name} decided without review for {review['sure']} of "
    line += f"{assessed} claims"
    if "without_review" in review:
        line += (
            f", accuracy {review['without_review']['accuracy']:.3f} on them "
            f"({claims['tasks'][main.name]['accuracy']:.3f} on all)"
        )
    return line


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
    from cardamage.reports.html_report import write_html_report

    print(f"wrote {write_html_report(args.run, image_root=args.images, worst=args.worst)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _synth_parser(sub)
    _train_parser(sub)
    _evaluate_parser(sub)
    _report_parser(sub)
