"""`cardamage assess`: claims (several photos of one car) in, one row per claim out, with each
photo's row beside it.

The photos of every claim are predicted as one stream (batches span claims, decoding overlaps
the model, as in `cardamage predict`), then each claim's rows are combined by
:func:`cardamage.inference.claims.assess_claim`: the rule behind every entry point.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from cardamage.data.manifest import load_manifest
from cardamage.errors import CardamageError
from cardamage.inference.batch import Row, Writer, find_images, predict_rows
from cardamage.inference.claims import (
    DEFAULT_RULE,
    ClaimAssessment,
    ClaimPhoto,
    NoEvidence,
    assess_claim,
    levels,
)
from cardamage.inference.photo_index.check import ReuseCheck, SeenBefore
from cardamage.inference.photo_index.store import Match
from cardamage.inference.predictor import Predictor

#: The claim rows' columns after the scores: the photos used (driving ones first), those left
#: out with their reason, the number of photos, and for ordinal tasks P(at least each level).
CLAIM_COLUMNS = ("photos", "left_out", "n_photos")
#: With a photo index, claims and photos also get where their photos were seen before.
SEEN_COLUMN = "seen_before"


@dataclass(frozen=True)
class Assessed:
    assessed: int  # claims with an assessment
    unassessed: int  # claims none of whose photos could be used
    to_review: int  # assessed claims a decision of which needs a person's review
    unreadable: int  # photos that could not be read
    #: per claim with photos found in other claims: 'claim A: photos found in claim B: ...'
    reused: tuple[str, ...] = ()
    #: why photos could not be checked for reuse (the first time it happened)
    index_warning: str | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    paths: tuple[Path, ...]


def claims_from_manifest(path: Path, image_root: Path | None = None) -> list[Claim]:
    """A manifest's photos by its ``claim`` column, claims in order of first appearance; a photo
    with an empty claim cell is a claim of its own (named by its path). Label columns, if any,
    are not needed."""
    manifest, _ = load_manifest(path, image_root or path.parent, (), check_images=False)
    if manifest.claims is None:
        raise CardamageError(f"{path}: no 'claim' column (give each photo its claim's id)")
    by_claim: dict[str, list[Path]] = {}
    for image, full, claim in zip(manifest.images, manifest.paths(), manifest.claims, strict=True):
        by_claim.setdefault(claim or image, []).append(full)
    return [Claim(claim, tuple(paths)) for claim, paths in by_claim.items()]


def claims_from_folders(folders: Sequence[Path]) -> list[Claim]:
    """A folder per claim (its name the claim's id): the given folders, or when one folder of
    folders is given, each of its sub-folders."""
    if len(folders) == 1 and folders[0].is_dir():
        subfolders = sorted(p for p in folders[0].iterdir() if p.is_dir())
        folders = subfolders or folders
    claims = []
    for folder in folders:
        if not folder.is_dir():
            raise CardamageError(f"{folder}: not a folder (a claim is a folder of its photos)")
        claims.append(Claim(folder.name, tuple(find_images([folder], recursive=True))))
    return claims


def assess_rows(
    predictor: Predictor,
    claims: Sequence[Claim],
    batch_size: int,
    rule: str = DEFAULT_RULE,
    reuse: ReuseCheck | None = None,
) -> Iterator[tuple[Claim, list[Row], ClaimAssessment | NoEvidence, SeenBefore | None]]:
    """Per claim, in order: its photo rows, its assessment (or why there is none) and, with
    a photo index, its photos found in other claims (searched, then recorded)."""
    rows = predict_rows(predictor, (p for c in claims for p in c.paths), batch_size)
    for claim in claims:
        photo_rows = [next(rows) for _ in claim.paths]
        photos = [ClaimPhoto(r.path, r.result, r.error) for r in photo_rows]
        seen = reuse.check(claim.id, photos) if reuse is not None else None
        try:
            yield claim, photo_rows, assess_claim(claim.id, photos, rule, seen), seen
        except NoEvidence as e:
            yield claim, photo_rows, e, seen


def claim_row(claim: Claim, outcome: ClaimAssessment | NoEvidence) -> Row:
    """A claim as a row the per-photo Writer writes: its decision in a prediction's shape."""
    extra: dict[str, object] = {"n_photos": len(claim.paths)}
    if isinstance(outcome, NoEvidence):  # each photo's reason is on its own row
        return Row(claim.id, error=str(outcome), extra=extra)
    d = outcome.to_dict()
    extra |= {
        "photos": d["photos"],
        "left_out": [f"{x['photo']}: {x['reason']}" for x in d["left_out"]],
    }
    for name, task in outcome.tasks.items():
        extra |= {f"{name}:at_least:{k}": round(v, 4) for k, v in task.at_least.items()}
    return Row(
        claim.id, prediction=d["assessment"], result=outcome, extra=extra, note=outcome.partial
    )


def at_least_columns(predictor: Predictor) -> list[str]:
    """The combined P(at least each damaged level) of every ordinal (multiclass) task."""
    return [
        f"{t.name}:at_least:{t.labels[i]}"
        for t in predictor.tasks
        if t.multiclass
        for i in levels(t)[1:]
    ]


def assess_files(
    predictor: Predictor,
    claims: Sequence[Claim],
    fmt: str,
    claims_out: TextIO,
    photos_out: TextIO,
    batch_size: int = 32,
    rule: str = DEFAULT_RULE,
    reuse: ReuseCheck | None = None,
) -> Assessed:
    """Write one row per claim and one per photo (with its claim); return the counts. With
    ``reuse`` (a photo index) both get a ``seen_before`` column."""
    seen_column = (SEEN_COLUMN,) if reuse is not None else ()
    claim_writer = Writer(
        claims_out,
        fmt,
        predictor,
        key="claim",
        extra=(*seen_column, *CLAIM_COLUMNS, *at_least_columns(predictor)),
    )
    photo_writer = Writer(photos_out, fmt, predictor, extra=("claim", *seen_column))
    ok = failed = unreadable = to_review = 0
    log = _ReuseLog()
    outcomes: Iterable = assess_rows(predictor, claims, batch_size, rule, reuse)
    for claim, photo_rows, outcome, seen in tqdm(
        outcomes, total=len(claims), desc="assess", unit="claim", disable=None
    ):
        for row in photo_rows:
            row.extra["claim"] = claim.id
            if seen is not None:
                row.extra[SEEN_COLUMN] = [_match_text(m) for m in seen.photos.get(row.path, ())]
            photo_writer.write(row)
            unreadable += row.error is not None
        row = claim_row(claim, outcome)
        if seen is not None:
            row.extra[SEEN_COLUMN] = seen.message or seen.warning
            log.add(claim.id, seen)
        claim_writer.write(row)
        ok += not isinstance(outcome, NoEvidence)
        failed += isinstance(outcome, NoEvidence)
        to_review += not isinstance(outcome, NoEvidence) and outcome.needs_review
    claim_writer.close()
    photo_writer.close()
    return Assessed(ok, failed, unreadable, to_review, tuple(log.reused), log.warning)


@dataclass
class _ReuseLog:
    reused: list[str] = field(default_factory=list)
    warning: str | None = None

    def add(self, claim: str, seen: SeenBefore) -> None:
        if seen.message:
            self.reused.append(f"claim {claim}: {seen.message}")
        self.warning = self.warning or seen.warning


def _match_text(m: Match) -> str:
    return f"{m.claim}: {m.photo} ({m.kind}, similarity {m.similarity:.3f})"
