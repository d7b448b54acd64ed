"""The photo index: one table of fingerprints in a real database, searched in memory.

``PhotoIndex`` is what callers use; ``SqlIndex`` holds the behaviour both stores share (the
schema, writes, the in-memory search kept in step with the database) and its subclasses only
the dialect: SQLite, the embedded default (a file, safe with several server workers: WAL and
a busy timeout), and PostgreSQL for several machines. Every write is one transaction, so a
killed writer leaves whole entries or none. The ids of the rows grow in commit order (writers
take a lock), so a reader that has seen up to id N has seen every earlier entry.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from cardamage.errors import CardamageError
from cardamage.inference.photo_index.fingerprint import Fingerprint, unit
from cardamage.inference.photo_index.vectors import VectorSearch

#: Measured by bench/reused_photos.py on 762 distinct lensor-coco photos: within 6 bits, every
#: copy resized to 50 %, recompressed at JPEG 60 or mirrored is a copy (brightened 25 %: 98 %);
#: 4 to 10 bits move the distinct pairs matched by a few in 100,000.
COPY_BITS = 6
#: Measured likewise: at 0.90 every copy cropped by 10 % is found (82 % by its features alone)
#: and 0.026 % of the 289,941 pairs of distinct photos match (0.92 misses 0.5 % of the crops;
#: 0.85 matches 0.10 % of the pairs).
NEAR_COPY_SIMILARITY = 0.9
#: Nearest neighbours looked at per photo: matches are few, the rest room for a claim's own.
NEIGHBOURS = 32
#: Rows read from the database at a time when the search is built (bounds the memory it takes).
SYNC_BATCH = 10_000


class IndexUnavailable(CardamageError):
    """The index cannot be read or written: a claim is then answered without ``seen_before``."""


@dataclass(frozen=True)
class Entry:
    claim: str
    photo: str
    fingerprint: Fingerprint


@dataclass(frozen=True)
class Match:
    """A photo of another claim that this photo copies (hashes within COPY_BITS) or nearly
    copies (features at NEAR_COPY_SIMILARITY or more)."""

    claim: str
    photo: str
    similarity: float
    kind: str  # "copy" or "near-copy"
    added: str  # when that photo was indexed (ISO 8601, UTC)

    def to_dict(self) -> dict:
        return {
            "claim": self.claim,
            "photo": self.photo,
            "similarity": round(self.similarity, 4),
            "kind": self.kind,
            "added": self.added,
        }


@dataclass(frozen=True)
class IndexStats:
    location: str
    photos: int
    claims: int
    feature_space: str | None
    dim: int | None
    size_bytes: int
    skipped: int  # rows whose features are not the index's width (never expected: not searched)


class PhotoIndex(Protocol):
    location: str

    def add(self, entries: Sequence[Entry]) -> None: ...
    def search(self, fingerprint: Fingerprint, exclude_claim: str | None) -> list[Match]: ...
    def delete_claim(self, claim: str) -> int: ...
    def stats(self) -> IndexStats: ...
    def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
  id {serial} PRIMARY KEY, claim TEXT NOT NULL, photo TEXT NOT NULL, added TEXT NOT NULL,
  phash BIGINT NOT NULL, features {blob} NOT NULL, UNIQUE (claim, photo));
CREATE TABLE IF NOT EXISTS deletions (seq {serial} PRIMARY KEY, entry BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
"""


class SqlIndex:
    """The shared behaviour over a DB-API connection; subclasses give the dialect."""

    serial: str
    blob: str
    mark: str  # the driver's parameter placeholder

    def __init__(self, location: str, feature_space: str | None) -> None:
        self.location = location
        self.lock = threading.Lock()
        self.conn = self._connect()
        self.search_cache: VectorSearch | None = None
        self.seen_id = self.seen_deletion = 0
        with self._guard("create the tables"), self._write() as cur:
            for statement in SCHEMA.format(serial=self.serial, blob=self.blob).split(";"):
                cur.execute(statement)
        self.feature_space, self.dim = self._space(feature_space)

    # dialect ------------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A cursor in a transaction that holds the index's write lock until it commits."""
        raise NotImplementedError

    def _size(self) -> int:
        raise NotImplementedError

    def _ready(self) -> None:
        """Before reading: a store whose connection can break opens it again here."""

    def _errors(self) -> tuple[type[Exception], ...]:
        raise NotImplementedError

    # behaviour -----------------------------------------------------------------------------
    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Database errors as IndexUnavailable naming the index and what was being done."""
        try:
            yield
        except self._errors() as e:
            raise IndexUnavailable(f"photo index {self.location}: cannot {doing}: {e}") from None

    def _q(self, sql: str) -> str:
        return sql.replace("?", self.mark)

    def _space(self, wanted: str | None) -> tuple[str | None, int | None]:
        with self._guard("read its settings"):
            cur = self.conn.cursor()
            cur.execute("SELECT key, value FROM meta")
            meta = dict(cur.fetchall())
            self.conn.commit()
        space = meta.get("feature_space")
        if wanted is not None and space is not None and space != wanted:
            raise IndexUnavailable(
                f"photo index {self.location}: its features come from another model "
                f"(feature space {space}, this model's is {wanted}): rebuild it with "
                "`cardamage index build` or name another index"
            )
        return space or wanted, int(meta["dim"]) if "dim" in meta else None

    def add(self, entries: Sequence[Entry]) -> None:
        """Record photos (a photo already recorded under the same claim and name is replaced):
        one transaction for all of them."""
        if not entries:
            return
        dim = len(entries[0].fingerprint.features)
        if self.dim is not None and dim != self.dim:
            raise IndexUnavailable(
                f"photo index {self.location}: holds {self.dim}-d features, not {dim}-d ones"
            )
        added = datetime.now(UTC).isoformat(timespec="seconds")
        with self.lock, self._guard("record the photos"), self._write() as cur:
            if self.dim is None:
                self._set_space(cur, dim)
            for e in entries:
                cur.execute(
                    self._q("DELETE FROM photos WHERE claim = ? AND photo = ? RETURNING id"),
                    (e.claim, e.photo),
                )
                for (old,) in cur.fetchall():
                    cur.execute(self._q("INSERT INTO deletions (entry) VALUES (?)"), (old,))
                vector = unit(e.fingerprint.features).astype(np.float16).tobytes()
                cur.execute(
                    self._q(
                        "INSERT INTO photos (claim, photo, added, phash, features) "
                        "VALUES (?, ?, ?, ?, ?)"
                    ),
                    (e.claim, e.photo, added, e.fingerprint.phash, vector),
                )
        self.dim = dim

    def _set_space(self, cur: Any, dim: int) -> None:
        """The first photo sets the index's feature space, unless another writer just did
        (read again under the write lock): then it must be this one's."""
        cur.execute("SELECT key, value FROM meta")
        meta = dict(cur.fetchall())
        wanted = {"feature_space": self.feature_space or "", "dim": str(dim)}
        for key, value in wanted.items():
            if key not in meta:
                cur.execute(self._q("INSERT INTO meta (key, value) VALUES (?, ?)"), (key, value))
            elif meta[key] != value:
                raise IndexUnavailable(
                    f"photo index {self.location}: its {key} is {meta[key]}, not {value}"
                )

    def search(self, fingerprint: Fingerprint, exclude_claim: str | None = None) -> list[Match]:
        """The photos of other claims this photo copies or nearly copies, closest first."""
        with self.lock, self._guard("search"):
            self._sync()
            if self.search_cache is None:
                return []
            hashes = [fingerprint.phash, fingerprint.phash_mirror or fingerprint.phash]
            vector = unit(fingerprint.features)
            candidates = self.search_cache.search(
                hashes, vector, COPY_BITS, NEAR_COPY_SIMILARITY, NEIGHBOURS
            )
            rows = self._rows([c.id for c in candidates])
        matches = []
        for c in candidates:
            if c.id not in rows or rows[c.id][0] == exclude_claim:
                continue  # deleted since the last sync, or the claim's own photo
            claim, photo, added, features = rows[c.id]
            stored = np.frombuffer(bytes(features), dtype=np.float16).astype(np.float32)
            similarity = float(stored @ vector / max(float(np.linalg.norm(stored)), 1e-12))
            if c.bits <= COPY_BITS or similarity >= NEAR_COPY_SIMILARITY:
                kind = "copy" if c.bits <= COPY_BITS else "near-copy"
                matches.append(Match(claim, photo, similarity, kind, added))
        return sorted(matches, key=lambda m: (m.kind != "copy", -m.similarity))

    def _rows(self, ids: list[int]) -> dict[int, tuple[str, str, str, Any]]:
        """The candidates' rows, full features included (the search re-checks them)."""
        if not ids:
            return {}
        cur = self.conn.cursor()
        marks = ", ".join([self.mark] * len(ids))
        cur.execute(
            f"SELECT id, claim, photo, added, features FROM photos WHERE id IN ({marks})", ids
        )
        found = {int(i): (c, p, a, f) for i, c, p, a, f in cur.fetchall()}
        self.conn.commit()
        return found

    def _sync(self) -> None:
        """Bring the in-memory search up to the database: new rows, then deletions."""
        self._ready()
        if self.dim is None:  # set with the first photo, in the same transaction
            self.feature_space, self.dim = self._space(self.feature_space)
            if self.dim is None:
                return
        cur = self.conn.cursor()
        cur.execute(
            self._q("SELECT id, phash, features FROM photos WHERE id > ? ORDER BY id"),
            (self.seen_id,),
        )
        while rows := cur.fetchmany(SYNC_BATCH):
            self._take(rows)
        cur.execute(
            self._q("SELECT seq, entry FROM deletions WHERE seq > ? ORDER BY seq"),
            (self.seen_deletion,),
        )
        deletions = cur.fetchall()
        self.conn.commit()
        if deletions and self.search_cache is not None:
            self.search_cache.remove(np.array([d[1] for d in deletions], dtype=np.int64))
        if deletions:
            self.seen_deletion = int(deletions[-1][0])

    def _take(self, rows: list[tuple]) -> None:
        self.seen_id = int(rows[-1][0])
        expected = 2 * (self.dim or 0)
        good = [r for r in rows if len(r[2]) == expected]  # stats counts the others
        if not good:
            return
        if self.search_cache is None:
            self.search_cache = VectorSearch(self.dim or 0)
        vectors = np.frombuffer(b"".join(bytes(r[2]) for r in good), dtype=np.float16)
        self.search_cache.add(
            np.array([r[0] for r in good], dtype=np.int64),
            np.array([r[1] for r in good], dtype=np.int64),
            vectors.reshape(len(good), self.dim or 0).astype(np.float32),
        )

    def delete_claim(self, claim: str) -> int:
        """Remove every photo of a claim (data protection); returns how many there were."""
        with self.lock, self._guard("delete the claim's photos"), self._write() as cur:
            cur.execute(self._q("DELETE FROM photos WHERE claim = ? RETURNING id"), (claim,))
            ids = [row[0] for row in cur.fetchall()]
            for entry in ids:
                cur.execute(self._q("INSERT INTO deletions (entry) VALUES (?)"), (entry,))
        return len(ids)

    def stats(self) -> IndexStats:
        """Counted in the database: no search cache is built (seconds on a big index)."""
        with self.lock, self._guard("count its photos"):
            self._ready()
            space, dim = self._space(None)
            cur = self.conn.cursor()
            cur.execute(
                self._q(
                    "SELECT COUNT(*), COUNT(DISTINCT claim), "
                    "COALESCE(SUM(CASE WHEN length(features) = ? THEN 0 ELSE 1 END), 0) "
                    "FROM photos"
                ),
                (2 * (dim or 0),),
            )
            photos, claims, skipped = cur.fetchone()
            self.conn.commit()
            size = self._size()
        return IndexStats(self.location, photos, claims, space or None, dim, size, int(skipped))

    def close(self) -> None:
        with self.lock:
            self.conn.close()
