"""What the postgres backend promises beyond the core's contract, against a real server."""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import storage_shim as ss
from psycopg import sql
from storage_shim.cli import main as cli_main
from storage_shim.testing import workers

from storage_shim_postgres import (
    PostgresBackend,
    PostgresConnectionError,
    SchemaMissingError,
    SchemaVersionError,
)
from storage_shim_postgres.testing import (
    BINDIR_VARIABLE,
    Schema,
    ServerUnavailable,
    find_bindir,
    skip_or_fail,
)

Opener = Callable[..., ss.Store]


@pytest.fixture
def open_store(postgres_uri: Schema) -> Iterator[Opener]:
    """Opens stores on the test's schema; each store has its own connection pool."""
    opened: list[ss.Store] = []

    def open_another(**options: Any) -> ss.Store:
        store = ss.open_store(postgres_uri.uri, **{"schema": postgres_uri.schema, **options})
        opened.append(store)
        return store

    yield open_another
    for store in reversed(opened):
        store.close()


def admin(uri: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(uri, autocommit=True)


def with_query(uri: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query | params)))


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {seconds}s")
        time.sleep(0.01)


def advisory_holders(uri: str) -> list[int]:
    """The server processes holding an exclusive advisory lock (a transaction's or a key's)."""
    with admin(uri) as connection:
        rows = connection.execute(
            "SELECT DISTINCT pid FROM pg_locks"
            " WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted"
        ).fetchall()
    return [pid for (pid,) in rows]


def terminate(uri: str, pid: int) -> None:
    with admin(uri) as connection:
        connection.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


# -- opening -------------------------------------------------------------------------------------
def test_the_uri_scheme_picks_the_backend(postgres_uri: Schema) -> None:
    short = postgres_uri.uri.replace("postgresql://", "postgres://", 1)
    with (
        ss.open_store(postgres_uri.uri, schema=postgres_uri.schema) as store,
        ss.open_store(short, schema=postgres_uri.schema) as other,
    ):
        assert (store.default_backend, other.default_backend) == ("postgres", "postgres")
        assert isinstance(store.backend("postgres"), PostgresBackend)
        store.write("doc", {"from": "long"})
        assert other.read("doc") == {"from": "long"}


def test_without_create_schema_missing_tables_name_the_init_command(postgres_uri: Schema) -> None:
    uri, schema = postgres_uri.uri, postgres_uri.schema
    with pytest.raises(SchemaMissingError, match="storage-shim init") as info:
        ss.open_store(uri, schema=schema, create_schema=False)
    assert schema in str(info.value)
    with admin(uri) as connection:
        found = connection.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [schema]
        ).fetchone()
    assert found == (0,)
    with admin(uri) as connection:  # a DBA makes the schema; `storage-shim init` the tables
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    in_schema = with_query(uri, options=f"-csearch_path={schema}")
    assert cli_main(["init", in_schema]) == 0
    with ss.open_store(uri, schema=schema, create_schema=False) as store:
        store.write("doc", 1)
    with ss.open_store(in_schema, create_schema=False) as store:
        assert store.read("doc") == 1


def test_a_newer_table_layout_is_refused(open_store: Opener, postgres_uri: Schema) -> None:
    open_store().close()
    with admin(postgres_uri.uri) as connection:
        meta = sql.Identifier(postgres_uri.schema, "storage_shim_documents_meta")
        connection.execute(sql.SQL("UPDATE {} SET schema_version = 99").format(meta))
    with pytest.raises(SchemaVersionError, match="99"):
        open_store()


@pytest.mark.parametrize(
    ("option", "value"),
    [("table", "docs; DROP TABLE x"), ("table", "Docs"), ("schema", 'a"b'), ("table", "x" * 49)],
)
def test_table_and_schema_names_are_plain_identifiers(
    open_store: Opener, option: str, value: str
) -> None:
    with pytest.raises(ss.StorageError, match="identifier") as info:
        open_store(**{option: value})
    assert isinstance(info.value.__cause__, ValueError)


def test_a_table_option_keeps_stores_apart(open_store: Opener, postgres_uri: Schema) -> None:
    first, second = open_store(table="first_docs"), open_store(table="second_docs")
    first.write("doc", 1)
    assert second.get("doc") is None
    assert first.backend("postgres").namespace != second.backend("postgres").namespace
    with admin(postgres_uri.uri) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
            [postgres_uri.schema],
        ).fetchall()
    assert [t for (t,) in tables] == [
        "first_docs",
        "first_docs_meta",
        "first_docs_quarantine",
        "second_docs",
        "second_docs_meta",
        "second_docs_quarantine",
    ]


def test_close_closes_the_pool(postgres_uri: Schema) -> None:
    name = f"ss-close-{uuid.uuid4().hex[:8]}"
    uri = with_query(postgres_uri.uri, application_name=name)
    store = ss.open_store(uri, schema=postgres_uri.schema, pool_min_size=3, pool_max_size=3)

    def connections() -> int:
        with admin(postgres_uri.uri) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name]
            ).fetchone()
        assert row is not None
        return int(row[0])

    wait_for(lambda: connections() == 3, "the pool's three connections")
    store.close()
    wait_for(lambda: connections() == 0, "the pool's connections to end")


# -- locks, transactions and snapshots ----------------------------------------------------------
def test_two_stores_see_each_others_writes_and_never_half_a_transaction(
    open_store: Opener,
) -> None:
    mover, auditor = open_store(), open_store()
    workers.open_accounts(mover, 100)
    assert auditor.read(workers.ACCOUNTS[0]) == {"balance": 100, "moves": 0}
    pad, times, done = 50_000, 60, threading.Event()
    keys = [*workers.ACCOUNTS, workers.LEDGER]

    def move() -> None:
        try:
            for i in range(times):
                source, target = workers.ACCOUNTS[i % 3], workers.ACCOUNTS[(i + 1) % 3]
                with mover.transaction() as tx:
                    tx.update(
                        source, lambda a: {"balance": a["balance"] - 1, "moves": a["moves"] + 1}
                    )
                    tx.update(
                        target, lambda a: {"balance": a["balance"] + 1, "moves": a["moves"] + 1}
                    )
                    count = tx.read(workers.LEDGER)["transfers"] + 1
                    tx.write(
                        workers.LEDGER, {"transfers": count, "pad": f"{count:08d}" * (pad // 8)}
                    )
        finally:
            done.set()

    problems: list[str] = []
    audits = seen_in_transactions = 0
    with ThreadPoolExecutor(1) as pool:
        moving = pool.submit(move)
        while not done.is_set() or audits == 0:
            problem = workers.audit_problem(auditor.read_many(keys), 300, pad)
            audits += 1
            if problem:
                problems.append(problem)
            with auditor.transaction() as tx:
                inside = {ss.parse_key(k): tx.read(k) for k in keys}
            seen_in_transactions += 1
            if problem := workers.audit_problem(inside, 300, pad):
                problems.append(f"in a transaction: {problem}")
        moving.result()
    assert problems == []
    assert audits > 1
    assert seen_in_transactions > 1
    final = auditor.read_many(keys)
    assert final[ss.parse_key(workers.LEDGER)]["transfers"] == times


def test_updates_and_transactions_exclude_each_other(open_store: Opener) -> None:
    first, second = open_store(), open_store()
    first.write("x", 0)
    first.write("y", 0)
    rounds = 25

    def update() -> None:
        for _ in range(rounds):
            second.update("x", lambda n: n + 1)

    def transact() -> None:
        for _ in range(rounds):
            with first.transaction() as tx:
                x = tx.read("x")
                time.sleep(0.001)  # an update that slipped in now would be lost at the commit
                tx.write("x", x + 1)
                tx.write("y", tx.read("y") - 1)

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(update) for _ in range(4)] + [
            pool.submit(transact) for _ in range(2)
        ]
        for future in futures:
            future.result(timeout=120)
    assert first.read_many(["x", "y"]) == {("x",): 6 * rounds, ("y",): -2 * rounds}


def test_a_write_inside_update_passes_a_transaction_waiting_for_the_update(
    open_store: Opener, postgres_uri: Schema
) -> None:
    """A transaction queues for the update; the update's own write must not queue behind it."""
    store = open_store(lock_timeout=5)
    waiting = threading.Event()

    def transact() -> None:
        with store.transaction() as tx:
            tx.write("from/transaction", 1)

    def waiting_locks() -> int:
        with admin(postgres_uri.uri) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
        return int(row[0]) if row else 0

    with ThreadPoolExecutor(1) as pool:

        def fn(n: int) -> int:
            pending.append(pool.submit(transact))
            wait_for(lambda: waiting_locks() == 1, "the transaction to queue for the writers lock")
            waiting.set()
            store.write("from/update", n)
            return n + 1

        pending: list[Any] = []
        assert store.update("doc", fn, default=0) == 1
        pending[0].result(timeout=30)
    assert waiting.is_set()
    assert store.read_many(["from/transaction", "from/update"]) == {
        ("from", "transaction"): 1,
        ("from", "update"): 0,
    }


def test_lock_timeouts_raise_lock_timeout_error(open_store: Opener) -> None:
    holder, impatient = open_store(), open_store(lock_timeout=0.2)
    with holder.backend("postgres").lock(("doc",)):
        with pytest.raises(ss.LockTimeoutError) as info:
            impatient.update("doc", lambda n: n + 1, default=0)
        assert info.value.key == ("doc",)
        with pytest.raises(ss.LockTimeoutError):
            impatient.write("doc", 1)
        with pytest.raises(ss.LockTimeoutError) as info, impatient.transaction() as tx:
            tx.write("other", 1)  # the transaction waits for the writers lock, held shared
        assert info.value.key is None
        impatient.write("free", 1)  # another key is not locked
    assert impatient.update("doc", lambda n: n + 1, default=0) == 1
    assert impatient.exists("other") is False


# -- connection loss ---------------------------------------------------------------------------
def test_a_connection_lost_mid_transaction_commits_nothing(
    open_store: Opener, postgres_uri: Schema
) -> None:
    store = open_store()
    store.write("tx/a", 1)
    store.write("tx/gone", 1)

    def lose_the_connection_then_commit() -> None:
        with store.transaction() as tx:
            tx.write("tx/a", 2)
            tx.remove("tx/gone")
            tx.write("tx/new", 3)
            (pid,) = advisory_holders(postgres_uri.uri)  # the transaction's writers lock
            terminate(postgres_uri.uri, pid)

    with pytest.raises(PostgresConnectionError) as info:
        lose_the_connection_then_commit()
    assert info.value.committed is False
    assert isinstance(info.value, ss.StorageIOError)
    assert store.read_many(["tx/a", "tx/gone", "tx/new"]) == {("tx", "a"): 1, ("tx", "gone"): 1}
    with store.transaction() as tx:  # the writers lock went with the session
        tx.write("tx/new", 4)
    assert store.read("tx/new") == 4


def test_a_connection_lost_between_the_rows_of_a_commit_leaves_none_of_them(
    open_store: Opener, postgres_uri: Schema
) -> None:
    """A trigger kills the server process in the middle of the commit's row changes."""
    store = open_store()
    store.write("tx/a", 1)
    store.write("tx/gone", 1)
    schema = postgres_uri.schema
    with admin(postgres_uri.uri) as connection:
        connection.execute(
            sql.SQL(
                "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.key = 'tx/boom' THEN"
                " PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(10);"
                " END IF; RETURN NEW; END $$"
            ).format(function=sql.Identifier(schema, "die"))
        )
        connection.execute(
            sql.SQL(
                "CREATE TRIGGER die BEFORE INSERT OR UPDATE ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION {function}()"
            ).format(
                table=sql.Identifier(schema, "storage_shim_documents"),
                function=sql.Identifier(schema, "die"),
            )
        )

    def commit() -> None:
        with store.transaction() as tx:
            tx.remove("tx/gone")
            tx.write("tx/a", 2)
            tx.write("tx/big", {"pad": "x" * 1_000_000})
            tx.write("tx/boom", 3)
            tx.write("tx/after", 4)

    with pytest.raises(PostgresConnectionError) as info:
        commit()
    assert info.value.committed is False
    assert store.read_many(["tx/a", "tx/gone", "tx/big", "tx/boom", "tx/after"]) == {
        ("tx", "a"): 1,
        ("tx", "gone"): 1,
    }


def test_a_connection_lost_inside_update_writes_nothing_and_frees_the_key(
    open_store: Opener, postgres_uri: Schema
) -> None:
    store = open_store()
    store.write("n", 1)

    def kill_my_connection(n: int) -> int:
        (pid,) = advisory_holders(postgres_uri.uri)  # the update's key lock
        terminate(postgres_uri.uri, pid)
        return n + 1

    with pytest.raises(PostgresConnectionError) as info:
        store.update("n", kill_my_connection)
    assert info.value.committed is None  # the write was sent on a dead connection: unknown
    assert store.read("n") == 1
    assert open_store(lock_timeout=5).update("n", lambda n: n + 10) == 11


def test_an_unreachable_server_is_a_connection_error(postgres_uri: Schema) -> None:
    nowhere = with_query(postgres_uri.uri, port="1")
    with pytest.raises(PostgresConnectionError) as info:
        ss.open_store(nowhere, schema=postgres_uri.schema, connect_timeout=2)
    assert isinstance(info.value, OSError)
    assert "port=1" in str(info.value)


# -- passwords ---------------------------------------------------------------------------------
SECRET = "pw-Z3cret/+ü"


@pytest.mark.parametrize("form", ["user_part", "query"])
def test_passwords_appear_in_no_message(
    postgres_uri: Schema, caplog: pytest.LogCaptureFixture, form: str
) -> None:
    caplog.set_level(logging.DEBUG)
    parts = urllib.parse.urlsplit(postgres_uri.uri)
    if form == "user_part":
        quoted = urllib.parse.quote(SECRET, safe="")
        uri = urllib.parse.urlunsplit(
            parts._replace(netloc=f"postgres:{quoted}@{parts.netloc.split('@')[1]}")
        )
    else:
        uri = with_query(postgres_uri.uri, password=SECRET)
    forms = {SECRET, urllib.parse.quote(SECRET, safe=""), urllib.parse.quote_plus(SECRET)}
    shown: list[str] = []
    with (  # the test server trusts every connection, whatever the password
        ss.open_store(uri, schema=postgres_uri.schema) as store,
        ss.open_store(uri, schema=postgres_uri.schema, lock_timeout=0.1) as impatient,
    ):
        backend = store.backend("postgres")
        shown += [repr(store), backend.location_of(("a", "b")), backend.namespace]
        with backend.lock(("doc",)), pytest.raises(ss.LockTimeoutError) as timeout:
            impatient.write("doc", 1)
        shown.append(str(timeout.value))
    with pytest.raises(PostgresConnectionError) as unreachable:
        ss.open_store(with_query(uri, port="1"), schema=postgres_uri.schema)
    shown.append(str(unreachable.value))
    with pytest.raises(ss.StorageError) as invalid:
        ss.open_store(uri + "&bogus_parameter=1", schema=postgres_uri.schema)
    shown.append(str(invalid.value))
    shown += [record.getMessage() for record in caplog.records]
    leaks = [text for text in shown for secret in forms if secret in text]
    assert leaks == []
    assert "***" in shown[0]


# -- documents ---------------------------------------------------------------------------------
def test_documents_of_several_megabytes(open_store: Opener) -> None:
    big = {"text": "ü✓" * 1_000_000, "rows": [{"i": i, "s": f"row {i}"} for i in range(40_000)]}
    store, other = open_store(), open_store()
    receipt = store.write("big/one", big)
    assert receipt.bytes > 5_000_000
    assert other.read("big/one") == big
    assert store.update("big/one", lambda doc: {**doc, "n": 1})["n"] == 1
    with store.transaction() as tx:
        tx.write("big/two", big)
        tx.update("big/one", lambda doc: {**doc, "n": 2})
    found = other.read_many(["big/one", "big/two"])
    assert found[("big", "two")] == big
    assert found[("big", "one")]["n"] == 2


def test_durability_none_turns_synchronous_commit_off_and_says_so(open_store: Opener) -> None:
    settings = {}
    for durability in ("none", "fsync", "full"):
        store = open_store(durability=durability)
        receipt = store.write("doc", durability)
        assert receipt.durable is (durability != "none")
        backend = store.backend("postgres")
        assert isinstance(backend, PostgresBackend)
        with backend.connection() as connection:
            row = connection.execute("SHOW synchronous_commit").fetchone()
        settings[durability] = row[0] if row else None
    assert settings == {"none": "off", "fsync": "on", "full": "on"}


def test_list_is_an_index_range_scan_in_a_database_with_another_collation(
    postgres_server_uri: str,
) -> None:
    """An ICU default collation sorts ``a-b`` and ``a/x`` unlike the C order the range needs."""
    database = f"icu_{uuid.uuid4().hex[:12]}"
    with admin(postgres_server_uri) as connection:
        connection.execute(
            sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            ).format(sql.Identifier(database))
        )
    uri = urllib.parse.urlunsplit(
        urllib.parse.urlsplit(postgres_server_uri)._replace(path=f"/{database}")
    )
    try:
        with ss.open_store(uri) as store:
            keys = ["a", "a/x", "a/b/deep", "a-b", "a.b", "a b", "ab", "a0", "A/x", "a/é", "b/a"]
            for key in keys:
                store.write(key, key)
            assert store.list("a") == [("a",), ("a", "b", "deep"), ("a", "x"), ("a", "é")]
            assert store.list("a/b") == [("a", "b", "deep")]
            backend = store.backend("postgres")
            assert isinstance(backend, PostgresBackend)
            with backend.connection() as connection:
                connection.execute(
                    sql.SQL(
                        "INSERT INTO {} (key, data) SELECT 'bulk/' || i || '/doc', '1'"
                        " FROM generate_series(1, 20000) AS i"
                    ).format(backend.names.documents)
                )
                connection.execute(sql.SQL("ANALYZE {}").format(backend.names.documents))
                params = {"key": "bulk/7", "low": "bulk/7/", "high": "bulk/70"}
                plan = "\n".join(
                    line
                    for (line,) in connection.execute(
                        sql.SQL("EXPLAIN ") + backend.statements.list_prefix, params
                    ).fetchall()
                )
            assert "Seq Scan" not in plan
            assert "storage_shim_documents_pkey" in plan
            assert store.list("bulk/7") == [("bulk", "7", "doc")]
    finally:
        with admin(postgres_server_uri) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database))
            )


def test_quarantine_keeps_the_bytes_in_the_quarantine_table(
    open_store: Opener, postgres_uri: Schema
) -> None:
    store = open_store()
    backend = store.backend("postgres")
    backend.write(("bad",), b"{not json")
    where = backend.quarantine(("bad",), b"{not json")
    assert where is not None
    assert where.startswith(backend.location_of(()).rstrip("#"))
    row_id = int(where.rsplit("/", 1)[1])
    with admin(postgres_uri.uri) as connection:
        table = sql.Identifier(postgres_uri.schema, "storage_shim_documents_quarantine")
        row = connection.execute(
            sql.SQL("SELECT key, data FROM {} WHERE id = %s").format(table), [row_id]
        ).fetchone()
    assert row == ("bad", b"{not json")
    assert store.exists("bad") is False


def test_connections_the_server_ended_while_idle_are_replaced_unnoticed(
    postgres_uri: Schema,
) -> None:
    name = f"ss-idle-{uuid.uuid4().hex[:8]}"
    uri = with_query(postgres_uri.uri, application_name=name)
    with ss.open_store(uri, schema=postgres_uri.schema, pool_min_size=2, pool_max_size=2) as store:
        store.write("doc", 1)
        with admin(postgres_uri.uri) as connection:
            ended = connection.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE application_name = %s",
                [name],
            ).fetchall()
        assert ended == [(True,), (True,)]
        assert store.read("doc") == 1
        assert store.update("doc", lambda n: n + 1) == 2
        with store.transaction() as tx:
            tx.write("doc", tx.read("doc") + 1)
        assert store.read("doc") == 3


def test_storage_shim_migrate_moves_a_directory_into_postgres(
    postgres_uri: Schema, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with ss.open_store(tmp_path / "state", durability="none") as files:
        for i in range(300):
            files.write(f"sessions/s{i}", {"i": i, "text": "é" * i})
        files.write("settings", {"theme": "dark"})
    with admin(postgres_uri.uri) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_uri.schema)))
    destination = with_query(postgres_uri.uri, options=f"-csearch_path={postgres_uri.schema}")
    assert cli_main(["migrate", str(tmp_path / "state"), destination, "--no-progress"]) == 0
    assert "verified" in capsys.readouterr().out
    with ss.open_store(postgres_uri.uri, schema=postgres_uri.schema, create_schema=False) as store:
        assert len(store.list("sessions")) == 300
        assert store.read("sessions/s299") == {"i": 299, "text": "é" * 299}
        assert store.read("settings") == {"theme": "dark"}


def test_a_role_with_only_the_documented_grants_runs_the_store(postgres_uri: Schema) -> None:
    """docs/many-machines.md: the owner creates the tables; the application reads and writes."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    schema = postgres_uri.schema
    ss.open_store(postgres_uri.uri, schema=schema).close()  # the owner creates the tables
    names = {
        "role": sql.Identifier(role),
        "schema": sql.Identifier(schema),
        "documents": sql.Identifier(schema, "storage_shim_documents"),
        "quarantine": sql.Identifier(schema, "storage_shim_documents_quarantine"),
        "meta": sql.Identifier(schema, "storage_shim_documents_meta"),
    }
    grants = [
        "CREATE ROLE {role} LOGIN",
        "GRANT USAGE ON SCHEMA {schema} TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {documents}, {quarantine} TO {role}",
        "GRANT SELECT ON {meta} TO {role}",
    ]
    with admin(postgres_uri.uri) as connection:
        for grant in grants:
            connection.execute(sql.SQL(grant).format(**names))
    parts = urllib.parse.urlsplit(postgres_uri.uri)
    as_role = urllib.parse.urlunsplit(parts._replace(netloc=f"{role}@"))
    try:
        with ss.open_store(as_role, schema=schema, create_schema=False) as store:
            store.write("doc", 1)
            assert store.update("doc", lambda n: n + 1) == 2
            with store.transaction() as tx:
                tx.write("other", tx.read("doc"))
                tx.remove("doc")
            assert store.list() == [("other",)]
            backend = store.backend("postgres")
            backend.write(("bad",), b"{")
            assert backend.quarantine(("bad",), b"{") is not None
        with pytest.raises(ss.StorageError, match="permission denied"):
            ss.open_store(as_role, schema=schema, table="new_table")  # no right to create
    finally:
        with admin(postgres_uri.uri) as connection:
            connection.execute(sql.SQL("DROP OWNED BY {role}").format(**names))
            connection.execute(sql.SQL("DROP ROLE {role}").format(**names))


def test_a_location_that_is_not_a_postgresql_uri_is_refused(tmp_path: Any) -> None:
    for location in (tmp_path / "dir", "mysql://u@h/db", "postgresql://u@h/db?no_such_parameter=1"):
        with pytest.raises(ss.InvalidLocationError):
            ss.open_store(location, backend="postgres")


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        ("true", pytest.fail.Exception),
        (None, pytest.skip.Exception),
        ("false", pytest.skip.Exception),
    ],
)
def test_no_server_skips_the_tests_except_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type[BaseException]
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no PostgreSQL"):
        skip_or_fail("no PostgreSQL server binaries found")


def test_the_server_binaries_are_found_or_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty, fake = tmp_path / "empty", tmp_path / "fake"
    empty.mkdir()
    fake.mkdir()
    for program in ("initdb", "pg_ctl", "postgres"):
        (fake / program).write_text("#!/bin/sh\n")
        (fake / program).chmod(0o755)
    monkeypatch.setenv("PATH", str(empty))  # no pg_config, no initdb
    monkeypatch.setattr("glob.glob", lambda pattern: [])  # no /usr/lib/postgresql
    monkeypatch.setenv(BINDIR_VARIABLE, str(empty))
    with pytest.raises(ServerUnavailable, match="apt-get install postgresql") as info:
        find_bindir()
    assert str(empty) in str(info.value)
    monkeypatch.setenv(BINDIR_VARIABLE, str(fake))
    assert find_bindir() == str(fake)
