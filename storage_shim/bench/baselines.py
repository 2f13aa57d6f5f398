"""Other ways to keep JSON documents: SQLite in WAL mode, atomicwrites, TinyDB.

The optional ones (``pip install storage-shim[bench]``) print as "not
installed" when missing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

import orjson

from .subjects import (
    COUNTER,
    Operation,
    Prepared,
    Subject,
    document_path,
    existing_keys,
    worker_key,
)
from .workloads import TRANSACTION_DOCUMENTS, Cell, bump, make_document

SQLITE_FULL = "sqlite3:wal-full"
SQLITE_NORMAL = "sqlite3:wal-normal"


def _name(key: tuple[str, ...]) -> str:
    return "/".join(key)


class _Sqlite(Prepared):
    """One connection per worker; every write is its own ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, cell: Cell, path: str, synchronous: str, create: bool) -> None:
        self.cell, self.path, self.synchronous = cell, path, synchronous
        self.document = make_document(cell.size)
        self.connections: dict[int, sqlite3.Connection] = {}
        if not create:
            return
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, value BLOB)")
            data = orjson.dumps(self.document)
            keys = [worker_key(w) for w in range(cell.parallel)] + [COUNTER]
            db.executemany(
                "INSERT OR REPLACE INTO docs VALUES (?, ?)", [(_name(k), data) for k in keys]
            )
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db

    def _connection(self, worker: int) -> sqlite3.Connection:
        if worker not in self.connections:
            self.connections[worker] = self._connect()
        return self.connections[worker]

    def operation(self, worker: int) -> Operation:
        db, document, workload = self._connection(worker), self.document, self.cell.workload
        key = _name(worker_key(worker))
        if workload == "read":

            def read() -> Any:
                (value,) = db.execute("SELECT value FROM docs WHERE key = ?", (key,)).fetchone()
                return orjson.loads(value)

            return read
        if workload == "write":
            return lambda: self._commit(db, [(key, orjson.dumps(document))])
        if workload == "transaction":
            keys = [_name(worker_key(worker, part)) for part in range(TRANSACTION_DOCUMENTS)]
            return lambda: self._commit(db, [(k, orjson.dumps(document)) for k in keys])
        counter = _name(COUNTER)

        def update() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                (value,) = db.execute("SELECT value FROM docs WHERE key = ?", (counter,)).fetchone()
                new = orjson.dumps(bump(orjson.loads(value)))
                db.execute("UPDATE docs SET value = ? WHERE key = ?", (new, counter))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        return update

    @staticmethod
    def _commit(db: sqlite3.Connection, rows: list[tuple[str, bytes]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?)", rows)
        db.execute("COMMIT")

    def counter(self) -> int | None:
        db = self._connect()
        try:
            (value,) = db.execute(
                "SELECT value FROM docs WHERE key = ?", (_name(COUNTER),)
            ).fetchone()
        finally:
            db.close()
        return int(orjson.loads(value)["counter"])

    def close(self) -> None:
        for db in self.connections.values():
            db.close()
        self.connections.clear()


class SqliteSubject(Subject):
    kind = "library"

    def __init__(self, synchronous: str) -> None:
        self.synchronous = synchronous
        self.name = SQLITE_FULL if synchronous == "FULL" else SQLITE_NORMAL
        self.description = (
            f"sqlite3, WAL, synchronous={synchronous}, one BEGIN IMMEDIATE transaction per"
            " operation, orjson values"
        )

    def supports(self, cell: Cell) -> bool:
        if cell.workload == "read":
            return self.synchronous == "NORMAL"
        return (cell.durability == "fsync") == (self.synchronous == "FULL")

    def prepare(self, cell: Cell, directory: str, *, create: bool = True) -> Prepared:
        os.makedirs(directory, exist_ok=True)
        return _Sqlite(cell, os.path.join(directory, "bench.db"), self.synchronous, create)


class AtomicwritesSubject(Subject):
    name = "atomicwrites"
    description = "atomicwrites.atomic_write: temp file, fsync, rename, directory fsync"
    kind = "library"
    requires = "atomicwrites"

    def supports(self, cell: Cell) -> bool:
        return cell.workload == "write" and cell.durability == "fsync"  # it always fsyncs

    def prepare(self, cell: Cell, directory: str, *, create: bool = True) -> Prepared:
        return _Atomicwrites(cell, directory)


class _Atomicwrites(Prepared):
    def __init__(self, cell: Cell, directory: str) -> None:
        from atomicwrites import (  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: PLC0415  # optional
            atomic_write,
        )

        self.atomic_write = atomic_write
        self.directory, self.document = directory, make_document(cell.size)
        os.makedirs(os.path.join(directory, "bench"), exist_ok=True)
        for key in existing_keys(cell):
            with atomic_write(document_path(directory, key), mode="wb", overwrite=True) as file:
                file.write(orjson.dumps(self.document))

    def operation(self, worker: int) -> Operation:
        path, document, atomic_write = (
            document_path(self.directory, worker_key(worker)),
            self.document,
            self.atomic_write,
        )

        def write() -> None:
            with atomic_write(path, mode="wb", overwrite=True) as file:
                file.write(orjson.dumps(document))

        return write


class TinydbSubject(Subject):
    name = "tinydb"
    description = "TinyDB, default JSONStorage (rewrites the whole file and fsyncs; one lock)"
    kind = "library"
    requires = "tinydb"

    def supports(self, cell: Cell) -> bool:
        if cell.workload == "read":
            return True
        return cell.workload == "write" and cell.durability == "fsync"  # it always fsyncs

    def prepare(self, cell: Cell, directory: str, *, create: bool = True) -> Prepared:
        return _Tinydb(cell, directory)


class _Tinydb(Prepared):
    """TinyDB is not thread-safe: one lock serialises the threads, as its docs advise."""

    def __init__(self, cell: Cell, directory: str) -> None:
        from tinydb import TinyDB  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

        os.makedirs(directory, exist_ok=True)
        self.db = TinyDB(os.path.join(directory, "bench.json"))
        self.table = self.db.table("docs")
        self.lock = threading.Lock()
        self.cell, self.document = cell, make_document(cell.size)
        for worker in range(cell.parallel):
            self._upsert(worker)

    def _upsert(self, worker: int) -> None:
        from tinydb.table import (  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
            Document,
        )

        with self.lock:
            self.table.upsert(Document(self.document, doc_id=worker + 1))

    def operation(self, worker: int) -> Operation:
        if self.cell.workload == "write":
            return lambda: self._upsert(worker)

        def read() -> Any:
            with self.lock:
                return self.table.get(doc_id=worker + 1)

        return read

    def close(self) -> None:
        self.db.close()


def library_subjects() -> list[Subject]:
    return [SqliteSubject("FULL"), SqliteSubject("NORMAL"), AtomicwritesSubject(), TinydbSubject()]
