"""The embedded store: one SQLite file, created on first use.

WAL lets several server workers read while one writes; a busy timeout makes a writer wait for
another instead of failing; ``BEGIN IMMEDIATE`` takes the write lock before the first read, so
two writers never deadlock upgrading. ``secure_delete`` overwrites deleted rows on disk: a
claim deleted for data protection leaves no fingerprint behind in free pages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cardamage.inference.photo_index.store import IndexUnavailable, SqlIndex

#: How long a writer waits for another's transaction before giving up.
BUSY_TIMEOUT_S = 30.0


class SqliteIndex(SqlIndex):
    serial = "INTEGER"  # an INTEGER PRIMARY KEY is the rowid: it grows with each insert
    blob = "BLOB"
    mark = "?"

    def __init__(self, path: Path, feature_space: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(str(path), feature_space)

    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise IndexUnavailable(f"photo index {self.path}: a folder, not an index file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at each checkpoint
            conn.execute("PRAGMA secure_delete = ON")
        except (OSError, sqlite3.Error) as e:
            raise IndexUnavailable(f"photo index {self.path}: cannot open it: {e}") from None
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def _size(self) -> int:
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

    def _errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)
