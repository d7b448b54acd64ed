"""`cardamage data import` (COCO / Roboflow, class folders, the original CSV), `data inspect`
and `data review` (likely label issues of a run; a person's corrections applied)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cardamage.errors import CardamageError


def _tasks(config: Path | None):
    from cardamage.config import read_tasks

    return read_tasks(config)


def _present_tasks(path: Path, tasks: list) -> list:
    """The tasks whose column the manifest has: an imported set often lacks some (no location)."""
    import csv

    from cardamage.data.manifest import ORIGINAL_ALIASES

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            names = {c.strip().lower() for c in next(csv.reader(f), [])}
    except (OSError, UnicodeDecodeError, csv.Error):
        return tasks  # read_manifest reports the problem
    present = [t for t in tasks if t.name in names or ORIGINAL_ALIASES.get(t.name) in names]
    return present or tasks


def _import_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="turn COCO, class folders or the original CSV into a manifest"
    )
    p.add_argument("--format", choices=["coco", "folders", "original"], required=True)
    p.add_argument("--out", type=Path, required=True, help="the tidy manifest CSV to write")
    p.add_argument("--annotations", type=Path, nargs="+", help="coco: instances JSON file(s)")
    p.add_argument(
        "--keep-splits",
        action="store_true",
        help="coco: a split column (train, val, test) from each annotation file's name or folder",
    )
    p.add_argument("--mapping", type=Path, help="coco: box category -> labels (JSON)")
    p.add_argument("--images", type=Path, help="coco / original: the image root")
    p.add_argument("--root", type=Path, help="folders: one folder per class")
    p.add_argument("--task", help="folders: the task the folder names label")
    p.add_argument("--csv", type=Path, help="original: the original project's CSV")
    p.add_argument("--config", type=Path, help="a train config whose 'tasks' to use")
    p.set_defaults(run=_import)


def _require(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n}" for n in names if getattr(args, n) is None]
    if missing:
        raise CardamageError(f"--format {args.format} needs {', '.join(missing)}")


def _import(args: argparse.Namespace) -> int:
    from cardamage.data import importers

    tasks = _tasks(args.config)
    if args.format == "coco":
        _require(args, "annotations", "images", "mapping")
        report = importers.import_coco(
            args.annotations, args.images, args.mapping, args.out, tasks, args.keep_splits
        )
    elif args.format == "folders":
        _require(args, "root", "task")
        report = importers.import_folders(args.root, args.task, args.out, tasks)
    else:
        _require(args, "csv", "images")
        report = importers.import_original_csv(args.csv, args.images, args.out, tasks)
    print(report.summary())
    return 0


def _inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="label counts, co-occurrence, imbalance, splits, leakage, groups, problems"
    )
    p.add_argument(
        "source", type=Path, nargs="?", metavar="DATA", help="a manifest CSV or class folders"
    )
    p.add_argument("--data", type=Path, help="the same as DATA")
    p.add_argument("--images", type=Path, help="image root (default: the manifest's folder)")
    p.add_argument("--config", type=Path, help="a train config whose 'tasks' to use")
    p.add_argument("--task", help="class folders: the task's name (default: label)")
    p.set_defaults(run=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from cardamage.data.inspect import inspect_manifest
    from cardamage.data.sources import read_labelled

    data = args.source or args.data
    if data is None:
        raise CardamageError("data inspect needs a manifest CSV or a folder of class folders")
    configured = args.config is not None and _config_names_tasks(args.config)
    tasks = _tasks(args.config)
    if not data.is_dir():
        tasks = _present_tasks(data, tasks)
    found = read_labelled(
        data, args.images or data.parent, tasks, task=args.task, configured=configured
    )
    print(inspect_manifest(found.manifest, found.tasks, found.problems, found.notes, found.leaks))
    return 1 if found.problems else 0


def _config_names_tasks(config: Path) -> bool:
    from cardamage.config import read_json_config, sectioned

    return "tasks" in sectioned(read_json_config(config)).get("data", {})


def _positive(text: str) -> int:
    """argparse type: a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got '{text}'")
    return value


def _review_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("review", help="photos whose labels are probably wrong; apply fixes")
    p.add_argument(
        "run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="a run to list the issues of"
    )
    p.add_argument("--top", type=_positive, default=20, help="issues shown per task (default 20)")
    p.add_argument("--apply", type=Path, help="corrections CSV: image, then a column per task")
    p.add_argument("--data", type=Path, help="--apply: the manifest to correct")
    p.add_argument("--images", type=Path, help="--apply: image root (default: --data's folder)")
    p.add_argument("--out", type=Path, help="--apply: the corrected manifest to write")
    p.add_argument("--config", type=Path, help="--apply: a train config whose 'tasks' to use")
    p.set_defaults(run=_review)


def _review(args: argparse.Namespace) -> int:
    from cardamage.metrics import label_review
    from cardamage.runs.label_issues import review_run
    from cardamage.runs.rundir import RunDir

    if args.apply is None:
        if args.run_dir is None:
            raise CardamageError("data review needs a run directory, or --apply")
        run = RunDir(args.run_dir)
        listed = run.label_issues_file.is_file()  # else review_run computes and writes it
        issues = review_run(run)
        print(label_review.issues_table(issues, args.top))
        print(f"{'the whole list' if listed else 'written'}: {run.label_issues_file}")
        return 0
    if args.data is None or args.out is None:
        raise CardamageError("--apply needs --data and --out")
    tasks = _present_tasks(args.data, _tasks(args.config))
    changed = label_review.apply_corrections(
        args.apply, args.data, args.images or args.data.parent, tasks, args.out
    )
    print(f"{changed} rows corrected; written: {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="import, inspect and review labelled photos")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    _import_parser(data_sub)
    _inspect_parser(data_sub)
    _review_parser(data_sub)
