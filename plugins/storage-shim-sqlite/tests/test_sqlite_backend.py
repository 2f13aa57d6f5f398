"""What the sqlite backend promises beyond the conformance suite."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import storage_shim as ss

from storage_shim_sqlite import schema
from storage_shim_sqlite.backend import SqliteBackend

OpenSqlite = Callable[..., ss.Store]


def sqlite_backend(store: ss.Store) -> SqliteBackend:
    backend = store.backend("sqlite")
    assert isinstance(backend, SqliteBackend)
    return backend


# -- listing --------------------------------------------------------------------------
def test_list_searches_the_key_index_and_never_scans_the_table(
    open_sqlite: OpenSqlite, on_connect: Callable[..., None], database: Path
) -> None:
    statements: list[str] = []
    on_connect(lambda conn: conn.set_trace_callback(statements.append))
    store = open_sqlite()
    keys = ["a/b", "a/b/c", "a/b/c/d", "a/b.x", "a/b-c", "a/b0", "a/bz", "a", "b/a/b"]
    for key in keys:
        store.write(key, key)
    statements.clear()
    assert store.list("a/b") == [("a", "b"), ("a", "b", "c"), ("a", "b", "c", "d")]
    listing = [s for s in statements if s.startswith("SELECT key FROM documents")]
    assert len(listing) == 1
    with contextlib.closing(sqlite3.connect(database)) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {listing[0]}")]
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert len(searches) == 2, plan
    assert all("USING COVERING INDEX sqlite_autoindex_documents_1" in s for s in searches), plan
    assert not [step for step in plan if step.startswith("SCAN")], plan


# -- locking --------------------------------------------------------------------------
def test_a_held_write_lock_times_out_with_a_clear_error(
    open_sqlite: OpenSqlite, database: Path
) -> None:
    store = open_sqlite(lock_timeout=0.1)
    store.write("doc", {"v": 1})
    attempts: dict[str, Callable[[], object]] = {
        "write": lambda: store.write("doc", {"v": 2}),
        "remove": lambda: store.remove("doc"),
        "update": lambda: store.update("doc", lambda d: d),
    }
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        for name, attempt in attempts.items():
            with pytest.raises(ss.LockTimeoutError) as info:
                attempt()
            assert isinstance(info.value, TimeoutError), name
            assert info.value.key == ("doc",), name
            assert info.value.lock_path == str(database), name
            assert info.value.timeout == 0.1
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(ss.LockTimeoutError):
            with store.transaction() as tx:
                tx.write("doc", 3)
        assert store.read("doc") == {"v": 1}  # readers do not wait for writers
        assert store.read_many(["doc"]) == {("doc",): {"v": 1}}
        other.execute("ROLLBACK")
    assert store.update("doc", lambda d: {"v": d["v"] + 1}) == {"v": 2}


@pytest.mark.parametrize("forever", [-1, float("inf")])
def test_a_lock_timeout_out_of_range_waits_for_ever(
    open_sqlite: OpenSqlite, forever: float
) -> None:
    store = open_sqlite(lock_timeout=forever)
    assert store.update("doc", lambda n: n + 1, default=0) == 1
    assert sqlite_backend(store).pragmas()["busy_timeout"] == 2_000_000_000


HOLD_A_TRANSACTION = """
import sys
import storage_shim as ss

with ss.open_store(sys.argv[1], backend="sqlite") as store:
    with store.transaction() as tx:
        tx.write("held", "by the child")
        print("holding", flush=True)
        sys.stdin.readline()
print("committed", flush=True)
"""


def test_a_transaction_in_another_process_holds_off_writers_not_readers(
    open_sqlite: OpenSqlite, store_dir: Path
) -> None:
    store = open_sqlite(lock_timeout=0.2)
    store.write("doc", 1)
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_TRANSACTION, str(store_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == "holding\n"
        with pytest.raises(ss.LockTimeoutError) as info:
            store.update("doc", lambda n: n + 1)
        assert info.value.key == ("doc",)
        assert store.read("doc") == 1
        assert store.exists("held") is False
        child.stdin.write("go on\n")
        child.stdin.flush()
        assert child.stdout.readline() == "committed\n"
    finally:
        child.communicate(timeout=60)
    assert child.returncode == 0
    assert store.update("doc", lambda n: n + 1) == 2
    assert store.read("held") == "by the child"


def test_writes_inside_update_commit_with_it(open_sqlite: OpenSqlite, database: Path) -> None:
    store = open_sqlite()
    store.write("doc", 1)
    seen_outside: list[object] = []

    def bump(n: int) -> int:
        store.write("side", "written inside")
        assert store.read("side") == "written inside"  # this thread sees its own transaction
        with contextlib.closing(sqlite3.connect(database)) as other:
            seen_outside.append(other.execute(schema.READ, ("side",)).fetchone())
        return n + 1

    assert store.update("doc", bump) == 2
    assert seen_outside == [None]  # other connections see nothing before the commit
    assert store.read_many(["doc", "side"]) == {("doc",): 2, ("side",): "written inside"}


def test_threads_share_a_pool_of_connections_that_close_with_the_store(
    open_sqlite: OpenSqlite, database: Path
) -> None:
    store = open_sqlite()
    store.write("counter", 0)
    start = threading.Barrier(6)

    def work(index: int) -> None:
        start.wait(timeout=30)
        for _ in range(20):
            store.update("counter", lambda n: n + 1)
            store.write(f"by/{index}", store.read("counter"))
            store.read_many(["counter", f"by/{index}"])

    with ThreadPoolExecutor(6) as pool:
        for future in [pool.submit(work, i) for i in range(6)]:
            future.result(timeout=120)
    assert store.read("counter") == 120
    assert Path(f"{database}-wal").exists()
    store.close()
    # SQLite removes the WAL when the last connection to the database closes.
    assert not Path(f"{database}-wal").exists()
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- durability -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("durability", "synchronous", "fullfsync", "synced"),
    [
        ("none", "NORMAL", False, False),
        ("fsync", "FULL", False, True),
        ("full", "FULL", True, True),
    ],
)
def test_durability_sets_synchronous_and_the_receipts(
    open_sqlite: OpenSqlite,
    durability: ss.Durability,
    synchronous: str,
    fullfsync: bool,
    synced: bool,
) -> None:
    store = open_sqlite(durability=durability, lock_timeout=2.5)
    receipt = store.write("doc", {"v": 1})
    assert (receipt.file_synced, receipt.dir_synced, receipt.durable) == (synced,) * 3
    with store.transaction() as tx:
        tx.write("a", 1)
        tx.write("b", 2)
    assert [(r.file_synced, r.dir_synced) for r in tx.receipts] == [(synced, synced)] * 2
    pragmas = sqlite_backend(store).pragmas()
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": synchronous,
        "fullfsync": fullfsync,
        "busy_timeout": 2500,
        "user_version": schema.SCHEMA_VERSION,
    }


def test_rewriting_identical_bytes_still_changes_the_row(
    open_sqlite: OpenSqlite, database: Path
) -> None:
    store = open_sqlite()
    for _ in range(3):
        store.write("doc", {"same": "bytes"})
    store.update("doc", lambda doc: doc)
    with store.transaction() as tx:
        tx.write("doc", {"same": "bytes"})
    with contextlib.closing(sqlite3.connect(database)) as conn:
        row = conn.execute("SELECT data, revision FROM documents WHERE key = 'doc'").fetchone()
    assert row == (b'{"same":"bytes"}', 5)


# -- several stores, large documents, errors --------------------------------------------
def test_two_stores_on_one_file_see_each_others_changes(open_sqlite: OpenSqlite) -> None:
    first, second = open_sqlite(), open_sqlite(durability="none")
    assert first.backend("sqlite").namespace == second.backend("sqlite").namespace
    first.write("a/one", 1)
    assert second.read("a/one") == 1
    with second.transaction() as tx:
        tx.update("a/one", lambda n: n + 10)
        tx.write("a/two", 2)
    assert first.read_many(["a/one", "a/two"]) == {("a", "one"): 11, ("a", "two"): 2}
    assert first.update("a/two", lambda n: n * 2) == 4
    assert second.read("a/two") == 4
    assert second.remove("a/one") is True
    assert first.list() == [("a", "two")]


def test_a_five_megabyte_document_round_trips(open_sqlite: OpenSqlite) -> None:
    document = {"rows": [{"i": i, "text": "é" * 50, "f": i / 3} for i in range(40_000)]}
    store = open_sqlite()
    receipt = store.write("big", document)
    assert receipt.bytes > 5_000_000
    assert store.read("big") == document
    assert store.update("big", lambda d: {**d, "extra": True})["extra"] is True
    store.close()
    with open_sqlite() as reopened:
        assert reopened.read("big") == {**document, "extra": True}


def test_a_full_database_is_a_storage_io_error_with_enospc(
    open_sqlite: OpenSqlite, on_connect: Callable[..., None]
) -> None:
    store = open_sqlite()
    store.write("doc", "small")
    store.close()
    on_connect(lambda conn: conn.execute("PRAGMA max_page_count = 30"))
    store = open_sqlite()
    with pytest.raises(ss.StorageIOError) as info:
        store.write("doc", "x" * 1_000_000)
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, OSError)
    assert isinstance(info.value.__cause__.__cause__, sqlite3.OperationalError)

    def fill_in_a_transaction() -> None:
        with store.transaction() as tx:
            tx.write("doc", "y" * 1_000_000)
            tx.write("other", 1)

    with pytest.raises(ss.StorageIOError):
        fill_in_a_transaction()
    assert store.read_many(["doc", "other"]) == {("doc",): "small"}
    store.write("doc", "still writable")
    assert store.read("doc") == "still writable"


def test_quarantine_keeps_the_bytes_in_the_database(
    open_sqlite: OpenSqlite, database: Path
) -> None:
    store = open_sqlite()
    backend = sqlite_backend(store)
    backend.write(("bad", "doc"), b"{cut")
    where = backend.quarantine(("bad", "doc"), b"{cut")
    assert where is not None
    assert where.startswith(f"{database}#quarantine/")
    assert where.endswith("/bad/doc")
    assert store.exists("bad/doc") is False
    with contextlib.closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT key, data FROM quarantine").fetchall()
    assert rows == [("bad/doc", b"{cut")]


def test_a_database_of_another_application_is_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE documents (id INTEGER, body TEXT)")
        conn.commit()
    before = foreign.read_bytes()
    with pytest.raises(ss.StorageError, match="not a storage_shim database"):
        ss.open_store(foreign, backend="sqlite")
    assert foreign.read_bytes() == before
    assert not Path(f"{foreign}-wal").exists()


def test_a_newer_schema_is_refused(open_sqlite: OpenSqlite, database: Path) -> None:
    open_sqlite().close()
    with contextlib.closing(sqlite3.connect(database)) as conn:
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    with pytest.raises(ss.StorageError, match="newer than"):
        open_sqlite()


def test_a_store_reopens_a_database_switched_out_of_wal(
    open_sqlite: OpenSqlite, database: Path
) -> None:
    with open_sqlite() as first:
        first.write("doc", 1)
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    store = open_sqlite()
    assert sqlite_backend(store).pragmas()["journal_mode"] == "wal"
    assert store.read("doc") == 1


def test_checkpoint_empties_the_wal(open_sqlite: OpenSqlite, database: Path) -> None:
    store = open_sqlite()
    for n in range(20):
        store.write(f"doc/{n}", {"n": n, "pad": "x" * 5000})
    assert os.path.getsize(f"{database}-wal") > 100_000
    store.checkpoint()
    assert os.path.getsize(f"{database}-wal") == 0
    assert store.read("doc/19")["n"] == 19


def test_a_backend_transaction_is_over_once_committed_or_left(open_sqlite: OpenSqlite) -> None:
    backend = sqlite_backend(open_sqlite())
    with backend.begin() as tx:
        tx.commit({("a",): b"1", ("b",): b"2"})
        with pytest.raises(ss.UnsupportedOperationError, match="over"):
            tx.read(("a",))
        with pytest.raises(ss.UnsupportedOperationError, match="over"):
            tx.commit({("c",): b"3"})
    assert backend.read_many([("a",), ("b",), ("c",)]) == {("a",): b"1", ("b",): b"2"}
    with backend.begin() as tx:
        assert tx.read(("a",)) == b"1"
    with pytest.raises(ss.UnsupportedOperationError, match="over"):
        tx.read(("a",))
    with backend.lock(("a",)), pytest.raises(ss.UnsupportedOperationError, match="do not nest"):
        backend.begin().__enter__()


def test_writes_after_sqlite_dropped_the_transaction_are_refused(open_sqlite: OpenSqlite) -> None:
    """SQLite rolls back a whole transaction on some errors; what follows must not autocommit."""
    store = open_sqlite()
    store.write("doc", 1)
    backend = sqlite_backend(store)

    def bump(n: int) -> int:
        store.write("side", "inside")
        pinned = backend._pool._pinned.connection  # what SQLite does after e.g. SQLITE_NOMEM
        assert pinned is not None
        pinned.execute("ROLLBACK")
        with pytest.raises(ss.StorageError, match="rolled back this thread's transaction"):
            store.write("other", "after the rollback")
        return n + 1

    with pytest.raises(ss.StorageError, match="rolled back this thread's transaction"):
        store.update("doc", bump)
    assert store.read_many(["doc", "side", "other"]) == {("doc",): 1}
    assert store.update("doc", lambda n: n + 1) == 2
