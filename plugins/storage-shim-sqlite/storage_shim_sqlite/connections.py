"""Connections to one database: a pool shared by threads, and the write scope.

A ``sqlite3.Connection`` must never be used by two threads at once, so each
operation borrows an idle connection and gives it back. A thread inside a
write scope (``update()``, a transaction, a write) keeps its connection pinned
until the scope ends: everything that thread does meanwhile, reads included,
runs inside the same SQLite transaction.

Writers of this process queue on a thread lock before ``BEGIN IMMEDIATE``, so
they wait for each other without SQLite's sleep-and-retry busy loop; other
processes are held off by SQLite's own write lock and its busy timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence

from storage_shim import Key, LockTimeoutError, StorageError, StoreClosedError

FOREVER = 2_000_000.0
"""The longest busy timeout: about 23 days, within SQLite's 32-bit milliseconds."""


class _Pinned(threading.local):
    def __init__(self) -> None:
        self.connection: sqlite3.Connection | None = None


class ConnectionPool:
    def __init__(self, path: str, *, timeout: float, pragmas: Sequence[str]) -> None:
        self.path = path
        self.timeout = timeout
        self._forever = timeout < 0 or timeout >= FOREVER
        self.pragmas = tuple(pragmas)
        self._idle: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._writer = threading.Lock()
        self._pinned = _Pinned()
        self._closed = False

    # -- borrowing ----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=FOREVER if self._forever else self.timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            for statement in self.pragmas:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _borrow(self) -> sqlite3.Connection:
        with self._guard:
            if self._closed:
                raise StoreClosedError(f"the sqlite backend of {self.path} is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            _rollback(conn)
        with self._guard:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """This thread's pinned connection, or an idle one, in autocommit mode."""
        pinned = self._pinned.connection
        if pinned is not None:
            yield pinned
            return
        conn = self._borrow()
        try:
            yield conn
        finally:
            self._give_back(conn)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection whose reads all see one committed state (or this thread's write scope)."""
        pinned = self._pinned.connection
        if pinned is not None:
            yield pinned
            return
        conn = self._borrow()
        try:
            conn.execute("BEGIN DEFERRED")  # the snapshot is taken by the first read
            yield conn
        finally:
            self._give_back(conn)

    # -- writing --------------------------------------------------------------------------
    @property
    def writing_here(self) -> bool:
        """Whether this thread is inside a write scope."""
        return self._pinned.connection is not None

    @contextlib.contextmanager
    def writing(self, key: Key | None, *, commit: bool) -> Iterator[sqlite3.Connection]:
        """Hold the database's write lock, re-entrantly for this thread.

        The outermost scope runs ``BEGIN IMMEDIATE`` and, when it ends without
        an exception, commits (``commit=True``) or rolls back whatever the
        caller did not commit itself; an exception always rolls back.
        """
        pinned = self._pinned
        if pinned.connection is not None:
            if not pinned.connection.in_transaction:  # or its statements would commit one by one
                raise StorageError(
                    f"{self.path}: SQLite rolled back this thread's transaction after an"
                    " earlier error; none of its changes were committed"
                )
            yield pinned.connection
            return
        self._queue(key)
        try:
            conn = self._borrow()
            try:
                conn.execute("BEGIN IMMEDIATE")
                pinned.connection = conn
                try:
                    yield conn
                    if commit and conn.in_transaction:
                        self.commit(conn)
                except BaseException:
                    _rollback(conn)
                    raise
                finally:
                    pinned.connection = None
            finally:
                self._give_back(conn)
        finally:
            self._writer.release()

    def _queue(self, key: Key | None) -> None:
        if not self._writer.acquire(timeout=-1 if self._forever else self.timeout):
            where = f"{self.path} (another thread of this process holds it)"
            raise LockTimeoutError(key, where, self.timeout)

    @staticmethod
    def commit(conn: sqlite3.Connection) -> None:
        """COMMIT; when that fails, make sure nothing of the transaction survives to a later one."""
        try:
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    # -- life cycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the idle connections now and the borrowed ones when they come back."""
        with self._guard:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
