"""``postgres``: each document is a row of a PostgreSQL table, for stores that many machines share.

Locking model (README.md and docs/many-machines.md explain it for operators):

* ``update()`` holds two session-level advisory locks on one connection: the
  store's *writers lock* in shared mode and the key's own lock. The read and
  the write inside run on that connection, so the write commits before the
  locks are released, and its receipt is true when it is returned.
* A plain ``write``/``remove`` takes the same two locks as transaction-level
  locks, in the statement (or transaction) that changes the row: it waits for
  a running ``update()`` of its key, as the contract requires.
* ``begin()`` opens a ``READ COMMITTED`` transaction holding the writers lock
  exclusively: like ``BEGIN IMMEDIATE`` it waits for the writers in flight and
  holds off new ones, so its reads see one state and its commit loses nothing.
* ``read_many`` is one ``SELECT``: one snapshot, whatever commits meanwhile.

Row locks alone would not do: a missing row cannot be locked, and two
``update()`` calls with a default would both insert. Advisory lock ids are
64-bit hashes of the schema, table and key; a collision only makes two keys
wait for each other. A thread already holding a key's lock takes further
locks without the writers lock, so that a transaction queued for it cannot
deadlock with that thread's nested writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import select
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, LiteralString

import psycopg
import psycopg_pool
import storage_shim as ss
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from storage_shim.locations import redact, uri_scheme

from .errors import PostgresConnectionError, PostgresError
from .schema import DEFAULT_TABLE, Names, check_name, ensure_schema

Connection = psycopg.Connection[tuple[Any, ...]]
Pool = psycopg_pool.ConnectionPool[Connection]

log = logging.getLogger(__name__)

SCHEMES = ("postgresql", "postgres")
_CONNECTION_STATES = ("08", "57P", "25P03")
"""Connection exceptions; the server shutting down or starting; an idle transaction ended."""


def lock_id(*parts: str) -> int:
    """A signed 64-bit advisory lock id, the same in every process and on every machine."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _connection_lost(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith(_CONNECTION_STATES)


@dataclass(frozen=True)
class _HeldLock:
    connection: Connection


class _ThreadState(threading.local):
    """The locks this thread holds, each on the connection its ``update()`` uses."""

    def __init__(self) -> None:
        self.locks: dict[ss.Key, _HeldLock] = {}
        self.transaction = False


class _Transaction(ss.BackendTransaction):
    def __init__(self, backend: PostgresBackend, connection: Connection) -> None:
        self.backend = backend
        self.connection = connection
        self.open = True

    def read(self, key: ss.Key) -> bytes:
        return self.backend.read_on(self.connection, key)

    def commit(self, changes: Mapping[ss.Key, bytes | None]) -> ss.WriteOutcome:
        backend, connection = self.backend, self.connection
        removed = [_name(key) for key, data in changes.items() if data is None]
        written = [(_name(key), data) for key, data in changes.items() if data is not None]
        with backend.errors(None):
            if removed:
                connection.execute(backend.statements.remove_many, [removed])
            if written:
                with connection.cursor() as cursor:
                    cursor.executemany(backend.statements.upsert, written)
        self.open = False
        with backend.errors(None, outcome_unknown=True):
            connection.execute("COMMIT")
        return backend.outcome


_UPSERT_TAIL = sql.SQL(
    "ON CONFLICT (key) DO UPDATE SET data = excluded.data,"
    " version = d.version + 1, updated_at = now()"
)


def _check_connection(connection: Connection) -> None:
    """Before lending an idle connection: a round trip only when its socket has news.

    An idle connection receives nothing unless the server ended it (the server
    process was terminated or restarted, or it is shutting down), so a
    readable socket is checked with a query, which raises and makes the pool
    take another connection; the common case costs one ``select``, not a round trip.
    """
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    if readable:
        psycopg_pool.ConnectionPool.check_connection(connection)


def _name(key: ss.Key) -> str:
    return "/".join(key)


class Statements:
    """Every statement of the backend, composed once with the quoted table names."""

    def __init__(self, names: Names) -> None:
        documents = names.documents

        def on_documents(text: LiteralString) -> sql.Composed:
            return sql.SQL(text).format(
                documents=documents, quarantine=names.quarantine, upsert_tail=_UPSERT_TAIL
            )

        self.read = on_documents("SELECT data FROM {documents} WHERE key = %s")
        self.exists = on_documents("SELECT 1 FROM {documents} WHERE key = %s")
        self.read_many = on_documents("SELECT key, data FROM {documents} WHERE key = ANY(%s)")
        self.list_all = on_documents("SELECT key FROM {documents}")
        self.list_prefix = on_documents(
            "SELECT key FROM {documents} WHERE key = %(key)s OR (key >= %(low)s AND key < %(high)s)"
        )
        self.upsert = on_documents(
            "INSERT INTO {documents} AS d (key, data) VALUES (%s, %b) {upsert_tail}"
        )
        self.locked_upsert = on_documents(
            "WITH locked AS (SELECT pg_advisory_xact_lock_shared(%(writers)s),"
            " pg_advisory_xact_lock(%(key_lock)s))"
            " INSERT INTO {documents} AS d (key, data) SELECT %(key)s, %(data)b FROM locked"
            " {upsert_tail}"
        )
        self.nested_upsert = on_documents(
            "WITH locked AS (SELECT pg_advisory_xact_lock(%(key_lock)s))"
            " INSERT INTO {documents} AS d (key, data) SELECT %(key)s, %(data)b FROM locked"
            " {upsert_tail}"
        )
        self.remove = on_documents("DELETE FROM {documents} WHERE key = %s RETURNING 1")
        self.remove_many = on_documents("DELETE FROM {documents} WHERE key = ANY(%s)")
        self.read_for_update = on_documents(
            "SELECT data FROM {documents} WHERE key = %s FOR UPDATE"
        )
        self.quarantine = on_documents(
            "INSERT INTO {quarantine} (key, data) VALUES (%s, %b) RETURNING id"
        )


class PostgresBackend(ss.Backend):
    """Documents in a PostgreSQL table, reached through a pool of connections.

    ``location`` is a ``postgresql://`` URI (libpq's syntax; passwords may also
    come from ``PGPASSWORD`` or ``~/.pgpass``). Options: ``schema`` (default:
    the connection's current schema) and ``table`` name the tables;
    ``create_schema=False`` refuses to create them (run ``storage-shim init``
    once instead); ``pool_min_size``/``pool_max_size`` bound the connections
    of this store, ``pool_timeout`` how long an operation waits for one;
    ``lock_timeout`` (seconds, negative: forever) how long it waits for a lock.
    """

    capabilities: ClassVar[ss.Capabilities] = ss.Capabilities(
        atomic_reads=True,
        crash_safe=True,
        durable=True,
        cross_process=True,
        transactions=True,
        persistent=True,
    )

    def __init__(
        self,
        location: str,
        *,
        durability: ss.Durability = "fsync",
        lock_timeout: float = 30.0,
        create_schema: bool = True,
        schema: str | None = None,
        table: str = DEFAULT_TABLE,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        pool_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        check_connections: bool = True,
    ) -> None:
        if not isinstance(location, str) or uri_scheme(location) not in SCHEMES:
            raise ss.InvalidLocationError(
                f"the postgres backend needs a postgresql:// URI as its location,"
                f" not {redact(location)!r}"
            )
        if not 0 <= pool_min_size <= pool_max_size or pool_max_size < 1:
            raise ValueError(
                "pool sizes need 0 <= pool_min_size <= pool_max_size, 1 <= pool_max_size"
            )
        self.shown = redact(location)
        self.durability = durability
        self.lock_timeout = lock_timeout
        self.pool_timeout = pool_timeout
        self.pool_max_size = pool_max_size
        self._closed = True
        self._secrets = _secrets_of(location)
        self._thread = _ThreadState()
        self._conninfo = self._connection_string(location, connect_timeout)
        check_name("table", table)
        with self.errors(None), psycopg.connect(self._conninfo, autocommit=True) as connection:
            self._configure(connection)
            self.names = Names(
                check_name("schema", schema or self._current_schema(connection)), table
            )
            ensure_schema(connection, self.names, create=create_schema, shown_location=self.shown)
            fsync = connection.execute("SHOW fsync").fetchone()
        server_syncs = fsync is not None and fsync[0] == "on"
        if not server_syncs and durability != "none":
            log.warning("%s runs with fsync=off: commits are not durable", self.shown)
        synced = server_syncs and durability != "none"
        self.outcome = ss.WriteOutcome(file_synced=synced, dir_synced=synced)
        self.statements = Statements(self.names)
        self._writers_lock = lock_id("storage_shim writers", self.names.schema, self.names.table)
        self._pool: Pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=pool_min_size,
            max_size=pool_max_size,
            timeout=pool_timeout,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=_check_connection if check_connections else None,
            name=f"storage_shim {self.names.shown}",
            open=False,
        )
        self._pool.open(wait=False)
        self._closed = False

    # -- connections and errors ------------------------------------------------------------
    def _connection_string(self, location: str, connect_timeout: float) -> str:
        try:
            params = conninfo_to_dict(location)
        except psycopg.Error as exc:
            raise ss.InvalidLocationError(
                f"{self.shown} is not a PostgreSQL URI: {self._clean(exc)}"
            ) from None
        params.setdefault("application_name", "storage_shim")
        params["connect_timeout"] = max(2, round(connect_timeout))  # libpq's minimum is 2
        return make_conninfo("", **params)

    def _configure(self, connection: Connection) -> None:
        timeout = "0" if self.lock_timeout < 0 else f"{max(1, round(self.lock_timeout * 1000))}ms"
        connection.execute(
            "SELECT set_config('synchronous_commit', %s, false),"
            " set_config('lock_timeout', %s, false),"
            " set_config('default_transaction_isolation', 'read committed', false)",
            ["off" if self.durability == "none" else "on", timeout],
        )

    @staticmethod
    def _current_schema(connection: Connection) -> str:
        row = connection.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            raise PostgresError("the connection has no current schema: pass schema=")
        return str(row[0])

    def _clean(self, exc: BaseException) -> str:
        """The error's message with the password blanked out, however libpq quoted it."""
        text = str(exc).strip()
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _lock_name(self, key: ss.Key | None) -> str:
        if key is None:
            return f"the writers lock of {self.names.shown} in {self.shown}"
        return f"advisory lock of {self.location_of(key)}"

    @contextlib.contextmanager
    def errors(self, key: ss.Key | None, *, outcome_unknown: bool = False) -> Iterator[None]:
        """Turn psycopg's exceptions into the library's, with the password left out."""
        try:
            yield
        except ss.StorageError:
            raise
        except psycopg.errors.LockNotAvailable as exc:
            raise ss.LockTimeoutError(key, self._lock_name(key), self.lock_timeout) from exc
        except psycopg_pool.PoolTimeout as exc:
            raise PostgresConnectionError(
                f"{self.shown}: no connection within {self.pool_timeout:g}s: the server is"
                f" unreachable, or all {self.pool_max_size} connections of the pool are busy"
                f" (pool_max_size): {self._clean(exc)}"
            ) from exc
        except psycopg_pool.PoolClosed as exc:
            raise ss.StoreClosedError(f"the postgres backend of {self.shown} is closed") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if not _connection_lost(exc):
                raise PostgresError(f"{self.shown}: {self._clean(exc)}") from exc
            outcome = (
                "; the commit was in flight, so it may or may not have been made"
                if outcome_unknown
                else "; nothing was committed"
            )
            raise PostgresConnectionError(
                f"{self.shown}: {self._clean(exc)}{outcome}",
                committed=None if outcome_unknown else False,
            ) from exc
        except psycopg.Error as exc:
            raise PostgresError(f"{self.shown}: {self._clean(exc)}") from exc

    @contextlib.contextmanager
    def _borrowed(
        self, key: ss.Key | None, *, outcome_unknown: bool = False
    ) -> Iterator[Connection]:
        """A connection of the pool for one operation, errors translated."""
        self._check_open()
        with self.errors(key, outcome_unknown=outcome_unknown), self._pool.connection() as conn:
            yield conn

    def connection(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection of the store's pool (autocommit), for maintenance queries and tests."""
        return self._borrowed(None)

    def _check_open(self) -> None:
        if self._closed:
            raise ss.StoreClosedError(f"the postgres backend of {self.shown} is closed")

    @staticmethod
    def _rollback(connection: Connection) -> None:
        try:
            connection.execute("ROLLBACK")
        except psycopg.Error:
            connection.close()  # the pool replaces it; the server rolls back on disconnect

    @contextlib.contextmanager
    def _for_key(
        self, key: ss.Key, *, outcome_unknown: bool = False
    ) -> Iterator[tuple[Connection, bool]]:
        """The connection holding the key's lock when this thread has it, else one of the pool.

        Yields it with whether the key's lock is held on it.
        """
        held = self._thread.locks.get(key)
        if held is not None:
            with self.errors(key, outcome_unknown=outcome_unknown):
                yield held.connection, True
            return
        with self._borrowed(key, outcome_unknown=outcome_unknown) as connection:
            yield connection, False

    # -- reading ------------------------------------------------------------------------------
    def read(self, key: ss.Key) -> bytes:
        with self._for_key(key) as (connection, _):
            return self.read_on(connection, key)

    def read_on(self, connection: Connection, key: ss.Key) -> bytes:
        with self.errors(key):
            row = connection.execute(self.statements.read, [_name(key)], binary=True).fetchone()
        if row is None:
            raise ss.NotFoundError(key)
        return bytes(row[0])

    def exists(self, key: ss.Key) -> bool:
        with self._for_key(key) as (connection, _):
            return connection.execute(self.statements.exists, [_name(key)]).fetchone() is not None

    def read_many(self, keys: Iterable[ss.Key]) -> dict[ss.Key, bytes]:
        """One statement, so one snapshot: never half of a transaction committed meanwhile."""
        wanted = {_name(key): key for key in keys}
        if not wanted:
            return {}
        with self._borrowed(None) as connection:
            rows = connection.execute(
                self.statements.read_many, [list(wanted)], binary=True
            ).fetchall()
        return {wanted[name]: bytes(data) for name, data in rows}

    def list(self, prefix: ss.Key) -> list[ss.Key]:
        """A range scan of the primary key: ``a/b`` lists ``a/b``, then ``a/b/`` up to ``a/b0``.

        ``0`` follows ``/`` in the C collation of the key column, so the range
        holds exactly the keys below the prefix, whatever the database's collation.
        """
        with self._borrowed(prefix or None) as connection:
            if prefix:
                name = _name(prefix)
                params = {"key": name, "low": name + "/", "high": name + "0"}
                rows = connection.execute(self.statements.list_prefix, params).fetchall()
            else:
                rows = connection.execute(self.statements.list_all).fetchall()
        keys = []
        for (name,) in rows:
            with contextlib.suppress(ss.InvalidKeyError):  # a row written by another program
                keys.append(ss.parse_key(name))
        return keys

    # -- writing ------------------------------------------------------------------------------
    def write(self, key: ss.Key, data: bytes) -> ss.WriteOutcome:
        """One statement: it takes the key's locks (unless held already) and upserts the row."""
        with self._for_key(key, outcome_unknown=True) as (connection, locked):
            if locked:
                connection.execute(self.statements.upsert, [_name(key), data])
                return self.outcome
            nested = bool(self._thread.locks)
            statement = self.statements.nested_upsert if nested else self.statements.locked_upsert
            params = {
                "writers": self._writers_lock,
                "key_lock": self._key_lock(key),
                "key": _name(key),
                "data": data,
            }
            connection.execute(statement, params)
        return self.outcome

    def remove(self, key: ss.Key) -> bool:
        """A short transaction: the locks first, so the delete sees what their holder committed."""
        with self._for_key(key) as (connection, locked):
            if locked:
                with self.errors(key, outcome_unknown=True):
                    row = connection.execute(self.statements.remove, [_name(key)]).fetchone()
                return row is not None
            connection.execute("BEGIN")
            try:
                self._lock_in_transaction(connection, key)
                row = connection.execute(self.statements.remove, [_name(key)]).fetchone()
            except BaseException:
                self._rollback(connection)
                raise
            with self.errors(key, outcome_unknown=True):
                connection.execute("COMMIT")
        return row is not None

    def _key_lock(self, key: ss.Key) -> int:
        return lock_id("storage_shim key", self.names.schema, self.names.table, _name(key))

    def _lock_in_transaction(self, connection: Connection, key: ss.Key) -> None:
        if self._thread.locks:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", [self._key_lock(key)])
        else:
            connection.execute(
                "SELECT pg_advisory_xact_lock_shared(%s), pg_advisory_xact_lock(%s)",
                [self._writers_lock, self._key_lock(key)],
            )

    # -- locks and transactions ---------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: ss.Key) -> Iterator[None]:
        """Session-level advisory locks on a connection that the thread keeps until the end."""
        thread = self._thread
        if key in thread.locks:  # re-entered by the same thread
            yield
            return
        if thread.transaction:
            raise ss.UnsupportedOperationError("this thread has a transaction open")
        self._check_open()
        with self.errors(key):
            connection = self._pool.getconn()
        try:
            with self.errors(key):
                if thread.locks:
                    connection.execute("SELECT pg_advisory_lock(%s)", [self._key_lock(key)])
                else:
                    connection.execute(
                        "SELECT pg_advisory_lock_shared(%s), pg_advisory_lock(%s)",
                        [self._writers_lock, self._key_lock(key)],
                    )
        except BaseException:
            self._release(connection)
            raise
        thread.locks[key] = _HeldLock(connection)
        try:
            yield
        finally:
            del thread.locks[key]
            self._release(connection)

    def _release(self, connection: Connection) -> None:
        """Drop the connection's session locks and give it back (closed, if that failed)."""
        try:
            connection.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            connection.close()  # the server releases a closed session's locks
        finally:
            self._pool.putconn(connection)

    @contextlib.contextmanager
    def begin(self) -> Iterator[ss.BackendTransaction]:
        """A transaction holding the writers lock exclusively, from its start to its end."""
        thread = self._thread
        if thread.locks or thread.transaction:
            raise ss.UnsupportedOperationError(
                "a transaction cannot start while this thread holds a lock or a transaction"
            )
        with self._borrowed(None) as connection:
            try:
                connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                connection.execute("SELECT pg_advisory_xact_lock(%s)", [self._writers_lock])
            except BaseException:
                self._rollback(connection)
                raise
            transaction = _Transaction(self, connection)
            thread.transaction = True
            try:
                yield transaction
            finally:
                thread.transaction = False
                if transaction.open:
                    self._rollback(connection)

    def quarantine(self, key: ss.Key, data: bytes) -> str | None:
        """Move the row to ``<table>_quarantine`` if it still holds ``data``; returns where."""
        with self.lock(key):
            connection = self._thread.locks[key].connection
            with self.errors(key):
                connection.execute("BEGIN")
                try:
                    row = connection.execute(
                        self.statements.read_for_update, [_name(key)], binary=True
                    ).fetchone()
                    if row is None or bytes(row[0]) != data:
                        self._rollback(connection)
                        return None
                    moved = connection.execute(
                        self.statements.quarantine, [_name(key), data]
                    ).fetchone()
                    connection.execute(self.statements.remove, [_name(key)])
                except BaseException:
                    self._rollback(connection)
                    raise
            with self.errors(key, outcome_unknown=True):
                connection.execute("COMMIT")
        assert moved is not None
        return f"{self.shown}#{self.names.schema}.{self.names.table}_quarantine/{moved[0]}"

    # -- identity and life cycle ------------------------------------------------------------------
    def location_of(self, key: ss.Key) -> str:
        return f"{self.shown}#{_name(key)}"

    @property
    def namespace(self) -> str:
        return f"postgres:{self.shown}#{self.names.shown}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.close()


def _secrets_of(location: str) -> list[str]:
    """Every form the URI's password may take in a message: as written, decoded, re-encoded."""
    parts = urllib.parse.urlsplit(location)
    written = parts.netloc.rpartition("@")[0].partition(":")[2] if "@" in parts.netloc else ""
    query = [v for k, v in urllib.parse.parse_qsl(parts.query) if k == "password"]
    secrets = set()
    for password in [written, urllib.parse.unquote(written), *query]:
        secrets |= {
            password,
            urllib.parse.quote(password, safe=""),
            urllib.parse.quote_plus(password),
        }
    return sorted(filter(None, secrets), key=len, reverse=True)


@ss.hookimpl
def storage_shim_backends() -> Iterable[ss.BackendSpec]:
    return [
        ss.BackendSpec(
            "postgres",
            PostgresBackend,
            "rows of a PostgreSQL table: transactions, many processes and machines",
            schemes=SCHEMES,
        )
    ]
