"""The shared store: PostgreSQL (psycopg 3), for several machines assessing claims.

Writers serialise on a transaction-level advisory lock, so row ids commit in order (a reader
that has seen id N has seen every earlier row: see ``SqlIndex``). A connection that broke (the
server restarted) is opened again on the next call.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from cardamage.inference.photo_index.store import IndexUnavailable, SqlIndex

#: Seconds to wait for the server before answering without the index.
CONNECT_TIMEOUT_S = 5
#: The advisory lock's key: any constant the application does not use for something else.
WRITE_LOCK = 0x63617264  # "card"
SCHEMES = ("postgresql://", "postgres://")


def redacted(url: str) -> str:
    """The URL without its password (in the authority or a query parameter), for messages."""
    url = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


class PostgresIndex(SqlIndex):
    serial = "BIGSERIAL"
    blob = "BYTEA"
    mark = "%s"

    def __init__(self, url: str, feature_space: str | None = None) -> None:
        self.url = url
        super().__init__(redacted(url), feature_space)

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as e:
            reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise IndexUnavailable(
                f"photo index {redacted(self.url)}: cannot connect: {reason}"
            ) from None

    @contextmanager
    def _write(self) -> Iterator[psycopg.Cursor]:
        self._ready()
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield cur

    def _ready(self) -> None:
        if self.conn.closed or self.conn.broken:
            self.conn = self._connect()

    def _size(self) -> int:
        cur = self.conn.cursor()
        cur.execute("SELECT pg_total_relation_size('photos') + pg_total_relation_size('deletions')")
        size = int(cur.fetchone()[0])
        self.conn.commit()
        return size

    def _errors(self) -> tuple[type[Exception], ...]:
        return (psycopg.Error,)
