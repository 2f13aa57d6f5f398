"""The database layout, its statements, and the check that a file is ours before touching it.

Documents live in a rowid table with the key as its primary key, not in a
``WITHOUT ROWID`` table: documents may be megabytes, and SQLite keeps large
rows best in a rowid table, while the primary key's own index (holding only
the keys) serves lookups and prefix listings without reading any document.

``revision`` counts the writes of a row. Besides telling versions apart, it
makes every write change the row: SQLite leaves pages whose bytes do not
change alone, so rewriting identical bytes would otherwise commit nothing and
flush nothing, and a receipt could not promise that the document is durable
(it may have been written before by a store with ``durability="none"``).
"""

from __future__ import annotations

import sqlite3

from storage_shim import Key, StorageError

SCHEMA_VERSION = 1
"""Kept in ``PRAGMA user_version``."""
APPLICATION_ID = int.from_bytes(b"ssdb", "big")
"""Kept in ``PRAGMA application_id``: marks the file as a storage_shim database."""

CREATE_TABLES = (
    "CREATE TABLE documents ("
    " key TEXT PRIMARY KEY NOT NULL, data BLOB NOT NULL, revision INTEGER NOT NULL DEFAULT 1)",
    "CREATE TABLE quarantine ("
    " id INTEGER PRIMARY KEY, key TEXT NOT NULL, taken_at TEXT NOT NULL, data BLOB NOT NULL)",
)
READ = "SELECT data FROM documents WHERE key = ?"
EXISTS = "SELECT 1 FROM documents WHERE key = ?"
UPSERT = (
    "INSERT INTO documents (key, data) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET data = excluded.data, revision = revision + 1"
)
DELETE = "DELETE FROM documents WHERE key = ?"
LIST_ALL = "SELECT key FROM documents"
LIST_PREFIX = (
    "SELECT key FROM documents WHERE key = ?"
    " UNION ALL SELECT key FROM documents WHERE key > ? AND key < ?"
)
"""The prefix's own document, then a range of the index: ``a/b/`` <= key < ``a/b0``."""
QUARANTINE = "INSERT INTO quarantine (key, taken_at, data) VALUES (?, ?, ?)"

READ_MANY_CHUNK = 500
"""Keys per ``IN (...)`` query: well below every SQLite build's limit on parameters."""


def key_text(key: Key) -> str:
    """Segments never contain ``/``, so joining them is unambiguous."""
    return "/".join(key)


def key_of(text: str) -> Key:
    return tuple(text.split("/"))


def prefix_parameters(prefix: Key) -> tuple[str, str, str]:
    """The bounds of :data:`LIST_PREFIX`: ``'0'`` is the character after ``'/'``."""
    text = key_text(prefix)
    return text, f"{text}/", f"{text}0"


def read_many_query(count: int) -> str:
    placeholders = ", ".join("?" * count)
    return f"SELECT key, data FROM documents WHERE key IN ({placeholders})"  # noqa: S608  # only ?s


def as_bytes(data: object) -> bytes:
    """A document as stored; text put there by another tool reads as its UTF-8 bytes."""
    if isinstance(data, bytes):
        return data
    return str(data).encode("utf-8", "surrogatepass")


def initialise(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file that is not ours, switch it to WAL and create the tables if missing.

    The checks run before anything is written, so a foreign database is left
    exactly as it was.
    """
    if _check(conn, path):
        return
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"{path}: SQLite could not switch to WAL mode (it stays {mode!r})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _check(conn, path):
            for statement in CREATE_TABLES:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check(conn: sqlite3.Connection, path: str) -> bool:
    """True for a database of ours in WAL mode; False for an empty file; raises otherwise."""
    application = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if application != APPLICATION_ID:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
        if application or tables:
            raise StorageError(
                f"{path} is not a storage_shim database (application_id {application},"
                f" schema objects: {', '.join(tables) or 'none'}); refusing to touch it"
            )
        return False
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{path} has schema version {version}, newer than this storage-shim-sqlite"
            f" understands ({SCHEMA_VERSION}): upgrade storage-shim-sqlite"
        )
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return str(mode).lower() == "wal"
