"""`cardamage index build | search | delete | stats`: the photo index of past claims."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cardamage.cli.inference import load_predictor, model_options
from cardamage.errors import CardamageError

#: `index search` exit status when the photo was found in a claim.
FOUND = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="the photo index of past claims: find photos reused from another claim",
        description="Every photo assessed with a claim (assess, POST /v1/claims) is recorded "
        "here as fingerprints (never the photo): build it from past claims, search a photo, "
        "delete a claim's photos (data protection), count them.",
    )
    commands = p.add_subparsers(dest="index_command", required=True)
    build = commands.add_parser("build", help="record the photos of past claims")
    build.add_argument(
        "folders", nargs="*", type=Path, help="a folder per claim, or one folder of such folders"
    )
    build.add_argument("--manifest", type=Path, help="a CSV with 'image' and 'claim' columns")
    build.add_argument(
        "--images", type=Path, help="the manifest's image root (default: its folder)"
    )
    build.add_argument("--batch-size", type=int, default=32)
    search = commands.add_parser("search", help="the claims a photo is found in")
    search.add_argument("photo", type=Path)
    search.add_argument("--claim", help="the photo's own claim, left out of the answer")
    delete = commands.add_parser("delete", help="remove every photo of the given claims")
    delete.add_argument("claims", nargs="+")
    stats = commands.add_parser("stats", help="photos, claims, feature space and size")
    for command in (build, search):
        model_options(command)
    for command in (delete, stats):
        command.add_argument("--config", type=Path, help="application_config.json (photo_index)")
    for command in (build, search, delete, stats):
        command.add_argument(
            "--index",
            metavar="FILE_OR_URL",
            help="a SQLite file or a postgresql:// URL (default: the config's photo_index)",
        )
        command.set_defaults(run=RUN[command.prog.split()[-1]])


def _location(args: argparse.Namespace) -> str:
    if args.index is not None:
        return args.index
    if args.config is not None:
        from cardamage.config import load_app_config

        location = load_app_config(args.config, {"model": getattr(args, "model", None)})
        if location.photo_index:
            return location.photo_index
    raise CardamageError("no photo index: give --index FILE_OR_URL or a config's photo_index")


def _open_for_model(args: argparse.Namespace):
    """The model (its features) and the index, which must hold that model's features."""
    from cardamage.inference.photo_index.check import open_index
    from cardamage.inference.photo_index.fingerprint import feature_space

    location = _location(args)
    predictor = load_predictor(args)
    predictor.fingerprint = True
    return predictor, open_index(location, feature_space(predictor.meta))


def _build(args: argparse.Namespace) -> int:
    from cardamage.inference.assess import claims_from_folders, claims_from_manifest
    from cardamage.inference.batch import predict_rows
    from cardamage.inference.photo_index.store import Entry

    if (args.manifest is None) == (not args.folders):
        raise CardamageError("give either folders (a folder per claim) or --manifest photos.csv")
    claims = (
        claims_from_manifest(args.manifest, args.images)
        if args.manifest is not None
        else claims_from_folders(args.folders)
    )
    predictor, index = _open_for_model(args)
    rows = predict_rows(predictor, (p for c in claims for p in c.paths), args.batch_size)
    recorded = unreadable = 0
    for claim in claims:
        entries = []
        for _ in claim.paths:
            row = next(rows)
            if row.result is None or row.result.fingerprint is None:
                unreadable += 1
                print(
                    f"cardamage: skipped {row.path}: {row.error or 'no features'}", file=sys.stderr
                )
                continue
            entries.append(Entry(claim.id, row.path, row.result.fingerprint))
        index.add(entries)
        recorded += len(entries)
    index.close()
    print(
        f"recorded {recorded} photo(s) of {len(claims)} claim(s) in {index.location}; "
        f"{unreadable} skipped",
        file=sys.stderr,
    )
    return 1 if unreadable else 0


def _search(args: argparse.Namespace) -> int:
    predictor, index = _open_for_model(args)
    prediction = predictor.predict([args.photo])[0]
    if prediction.fingerprint is None:
        raise CardamageError("the model gives no features: it cannot search the photo index")
    matches = index.search(prediction.fingerprint, exclude_claim=args.claim)
    index.close()
    for m in matches:
        print(json.dumps(m.to_dict()))
    print(f"{len(matches)} match(es) for {args.photo}", file=sys.stderr)
    return FOUND if matches else 0


def _delete(args: argparse.Namespace) -> int:
    from cardamage.inference.photo_index.check import open_index

    index = open_index(_location(args))
    for claim in args.claims:
        print(f"deleted {index.delete_claim(claim)} photo(s) of claim {claim}")
    index.close()
    return 0


def _stats(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from cardamage.inference.photo_index.check import open_index

    index = open_index(_location(args))
    print(json.dumps(asdict(index.stats()), indent=2))
    index.close()
    return 0


RUN = {"build": _build, "search": _search, "delete": _delete, "stats": _stats}
