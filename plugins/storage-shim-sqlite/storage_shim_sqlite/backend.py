"""``sqlite``: every document in one SQLite database, one row per key."""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from storage_shim import (
    Backend,
    BackendTransaction,
    Capabilities,
    Durability,
    FileSystem,
    Key,
    NotFoundError,
    StorageError,
    UnsupportedOperationError,
    WriteOutcome,
)

from . import schema
from .connections import ConnectionPool
from .errors import translated
from .location import database_path

MINIMUM_SQLITE = (3, 24, 0)
"""For ``INSERT ... ON CONFLICT DO UPDATE``."""
JOURNAL_SIZE_LIMIT = 64 << 20
"""The WAL is cut back to this size when a checkpoint lets it restart."""
SYNCHRONOUS: dict[Durability, str] = {"none": "NORMAL", "fsync": "FULL", "full": "FULL"}


def connection_pragmas(durability: Durability) -> list[str]:
    """Per-connection settings: ``synchronous`` and ``fullfsync`` are not kept in the file."""
    full = "ON" if durability == "full" else "OFF"
    return [
        f"PRAGMA synchronous = {SYNCHRONOUS[durability]}",
        f"PRAGMA fullfsync = {full}",
        f"PRAGMA checkpoint_fullfsync = {full}",
        f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}",
    ]


class _Transaction(BackendTransaction):
    """Runs on the connection that holds ``BEGIN IMMEDIATE``; the commit is one SQL COMMIT."""

    def __init__(self, backend: SqliteBackend, conn: sqlite3.Connection) -> None:
        self.backend = backend
        self.conn = conn
        self.committed = False
        self.ended = False

    def _check_open(self) -> None:
        if self.committed or self.ended:
            raise UnsupportedOperationError("this sqlite transaction is already over")

    def read(self, key: Key) -> bytes:
        self._check_open()
        with self.backend.translated(key):
            row = self.conn.execute(schema.READ, (schema.key_text(key),)).fetchone()
        if row is None:
            raise NotFoundError(key)
        return schema.as_bytes(row[0])

    def commit(self, changes: Mapping[Key, bytes | None]) -> WriteOutcome:
        """All changes and the COMMIT; after a failure the transaction is over, rolled back."""
        self._check_open()
        self.ended = True  # also when a statement fails: SQLite may have rolled back already
        with self.backend.translated(None):
            for key, data in changes.items():
                if data is None:
                    self.conn.execute(schema.DELETE, (schema.key_text(key),))
                else:
                    self.conn.execute(schema.UPSERT, (schema.key_text(key), data))
            ConnectionPool.commit(self.conn)
        self.committed = True
        return self.backend.outcome


class SqliteBackend(Backend):
    """Documents as rows of one SQLite database in WAL mode (``README.md`` has the details).

    ``location`` is the database file, a directory to hold ``storage.sqlite3``,
    or ``sqlite:///absolute/path``. ``lock_timeout`` bounds each wait for the
    write lock (for the other threads of this process, then for other
    processes); a negative value waits for ever.
    """

    capabilities = Capabilities(
        atomic_reads=True,
        crash_safe=True,
        durable=True,
        cross_process=True,
        transactions=True,
        persistent=True,
    )

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        durability: Durability = "fsync",
        lock_timeout: float = 30.0,
    ) -> None:
        if sqlite3.sqlite_version_info < MINIMUM_SQLITE:
            needed = ".".join(map(str, MINIMUM_SQLITE))
            raise StorageError(f"SQLite {sqlite3.sqlite_version} is too old: {needed} needed")
        if durability not in SYNCHRONOUS:
            raise ValueError(f"unknown durability {durability!r}")
        self.path = database_path(location)
        self.durability = durability
        self.lock_timeout = lock_timeout
        self.synced = durability != "none"
        self.outcome = WriteOutcome(file_synced=self.synced, dir_synced=self.synced)
        full = durability == "full"
        fs = FileSystem()
        directory = os.path.dirname(self.path)
        fs.makedirs(directory, sync=self.synced, full=full)
        self._pool = ConnectionPool(
            self.path, timeout=lock_timeout, pragmas=connection_pragmas(durability)
        )
        try:
            with self.translated(None), self._pool.connection() as conn:
                schema.initialise(conn, self.path)
            if self.synced:
                # The database file and its WAL may be new: their names must survive power
                # loss too. The pool keeps a connection open, so the WAL is never recreated.
                fs.fsync_dir(directory, full=full)
        except BaseException:
            self._pool.close()
            raise

    def translated(self, key: Key | None) -> contextlib.AbstractContextManager[None]:
        return translated(self.path, self.lock_timeout, key)

    @property
    def namespace(self) -> str:
        return f"sqlite:{self.path}"

    def location_of(self, key: Key) -> str:
        return f"{self.path}#{schema.key_text(key)}"

    # -- reading ------------------------------------------------------------------------
    def read(self, key: Key) -> bytes:
        with self.translated(key), self._pool.connection() as conn:
            row = conn.execute(schema.READ, (schema.key_text(key),)).fetchone()
        if row is None:
            raise NotFoundError(key)
        return schema.as_bytes(row[0])

    def exists(self, key: Key) -> bool:
        with self.translated(key), self._pool.connection() as conn:
            return conn.execute(schema.EXISTS, (schema.key_text(key),)).fetchone() is not None

    def read_many(self, keys: Iterable[Key]) -> dict[Key, bytes]:
        """One read transaction: every document as of one commit, whoever commits meanwhile."""
        wanted = [schema.key_text(key) for key in dict.fromkeys(keys)]
        found: dict[Key, bytes] = {}
        with self.translated(None), self._pool.snapshot() as conn:
            for start in range(0, len(wanted), schema.READ_MANY_CHUNK):
                chunk = wanted[start : start + schema.READ_MANY_CHUNK]
                for text, data in conn.execute(schema.read_many_query(len(chunk)), chunk):
                    found[schema.key_of(text)] = schema.as_bytes(data)
        return found

    def list(self, prefix: Key) -> list[Key]:
        with self.translated(prefix or None), self._pool.connection() as conn:
            if prefix:
                rows = conn.execute(schema.LIST_PREFIX, schema.prefix_parameters(prefix))
            else:
                rows = conn.execute(schema.LIST_ALL)
            return [schema.key_of(text) for (text,) in rows]

    # -- writing ------------------------------------------------------------------------
    def write(self, key: Key, data: bytes) -> WriteOutcome:
        with self.translated(key), self._pool.writing(key, commit=True) as conn:
            conn.execute(schema.UPSERT, (schema.key_text(key), data))
        return self.outcome

    def remove(self, key: Key) -> bool:
        with self.translated(key), self._pool.writing(key, commit=True) as conn:
            return conn.execute(schema.DELETE, (schema.key_text(key),)).rowcount > 0

    @contextlib.contextmanager
    def lock(self, key: Key) -> Iterator[None]:
        """The database's write lock, held from ``BEGIN IMMEDIATE`` to ``COMMIT``.

        ``update()`` reads, computes and writes inside that one transaction, so
        no writer of any process comes between; what the thread writes
        meanwhile is committed when the lock is released.
        """
        with self.translated(key), self._pool.writing(key, commit=True):
            yield

    @contextlib.contextmanager
    def begin(self) -> Iterator[BackendTransaction]:
        if self._pool.writing_here:
            raise UnsupportedOperationError(
                "this thread already holds the sqlite write lock (inside update() or a"
                " transaction); transactions do not nest"
            )
        with self.translated(None), self._pool.writing(None, commit=False) as conn:
            transaction = _Transaction(self, conn)
            try:
                yield transaction
            finally:
                transaction.ended = True

    def quarantine(self, key: Key, data: bytes) -> str | None:
        """Move the row to the ``quarantine`` table, in one transaction, if it still is ``data``."""
        text = schema.key_text(key)
        with self.translated(key), self._pool.writing(key, commit=True) as conn:
            row = conn.execute(schema.READ, (text,)).fetchone()
            if row is None or schema.as_bytes(row[0]) != data:
                return None
            taken = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
            conn.execute(schema.QUARANTINE, (text, taken, data))
            conn.execute(schema.DELETE, (text,))
        return f"{self.path}#quarantine/{taken}/{text}"

    def checkpoint(self) -> None:
        """Copy the WAL into the database file and empty it; waits for readers up to the timeout."""
        with self.translated(None), self._pool.connection() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- inspection and life cycle ---------------------------------------------------------
    def pragmas(self) -> dict[str, Any]:
        """The settings a connection of this backend runs with, as SQLite reports them."""
        names = ("journal_mode", "synchronous", "fullfsync", "busy_timeout", "user_version")
        with self.translated(None), self._pool.connection() as conn:
            values = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}
        levels = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        values["synchronous"] = levels.get(values["synchronous"], values["synchronous"])
        values["fullfsync"] = bool(values["fullfsync"])
        return values

    def recover(self) -> Sequence[Key]:
        """Nothing to do: SQLite rolls back an interrupted transaction on its own when opened."""
        return ()

    def close(self) -> None:
        self._pool.close()
