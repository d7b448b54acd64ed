"""The claims' link to the photo index: search each photo among other claims, then record it.

A claim's result never depends on the index being there: when it cannot be opened, read or
written (a read-only file, a database that is down, another model's index), the claim is
assessed as usual, without ``seen_before`` and with a warning saying why.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cardamage.inference.photo_index.fingerprint import Fingerprint
from cardamage.inference.photo_index.postgres import SCHEMES, PostgresIndex
from cardamage.inference.photo_index.sqlite import SqliteIndex
from cardamage.inference.photo_index.store import Entry, IndexUnavailable, Match, PhotoIndex

if TYPE_CHECKING:
    from cardamage.inference.claims import ClaimPhoto


def open_index(location: str | Path, feature_space: str | None = None) -> PhotoIndex:
    """A ``postgresql://`` URL or a SQLite file (created on first use). ``feature_space``: the
    model's (``fingerprint.feature_space``); None to only count or delete."""
    if str(location).startswith(SCHEMES):
        return PostgresIndex(str(location), feature_space)
    return SqliteIndex(Path(location), feature_space)


@dataclass(frozen=True)
class SeenBefore:
    """Per photo of a claim, the photos of other claims it copies; ``warning`` when the index
    could not be used (then nothing was searched or recorded)."""

    photos: dict[str, tuple[Match, ...]] = field(default_factory=dict)
    warning: str | None = None

    @property
    def claims(self) -> list[str]:
        """The other claims the photos were found in, in order of first match."""
        found = [m.claim for matches in self.photos.values() for m in matches]
        return list(dict.fromkeys(found))

    @property
    def message(self) -> str | None:
        """What a person reads first: 'photos found in claim X: a.jpg (copy of b.jpg)'."""
        if not self.claims:
            return None
        parts = []
        for claim in self.claims:
            pairs = [
                f"{name} ({m.kind} of {m.photo})"
                for name, matches in self.photos.items()
                for m in matches
                if m.claim == claim
            ]
            parts.append(f"claim {claim}: {', '.join(pairs)}")
        return "photos found in " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {
            "message": self.message,
            "claims": self.claims,
            "photos": {name: [m.to_dict() for m in ms] for name, ms in self.photos.items()},
            "warning": self.warning,
        }


class ReuseCheck:
    """One index for every claim of a command or server: opened on first use, and again after
    it failed (a database back up is used again). Thread-safe."""

    def __init__(self, location: str | Path, feature_space: str) -> None:
        self.location, self.feature_space = location, feature_space
        self.index: PhotoIndex | None = None
        self.lock = threading.Lock()

    def check(self, claim: str, photos: Sequence[ClaimPhoto]) -> SeenBefore:
        """Search the claim's readable photos among other claims', then record them under
        the claim (those that abstained too: a reused photo need not be a good one)."""
        read = [p for p in photos if p.prediction is not None]
        return self.search_and_record(
            claim, [(p.name, p.prediction.fingerprint) for p in read if p.prediction]
        )

    def search_and_record(
        self, claim: str, photos: Sequence[tuple[str, Fingerprint | None]]
    ) -> SeenBefore:
        usable = [(name, fp) for name, fp in photos if fp is not None]
        if not usable:
            if not photos:
                return SeenBefore()
            return SeenBefore(warning="the model gives no features: photos not checked for reuse")
        try:
            index = self._open()
            found = {name: tuple(index.search(fp, exclude_claim=claim)) for name, fp in usable}
            index.add([Entry(claim, name, fp) for name, fp in usable])
        except IndexUnavailable as e:
            return SeenBefore(warning=f"not checked for reused photos: {e}")
        return SeenBefore({name: m for name, m in found.items() if m})

    def _open(self) -> PhotoIndex:
        with self.lock:
            if self.index is None:
                self.index = open_index(self.location, self.feature_space)
            return self.index

    def close(self) -> None:
        with self.lock:
            if self.index is not None:
                self.index.close()
                self.index = None
