"""A throw-away PostgreSQL server for tests, started from the machine's own binaries.

::

    pytest_plugins = ["storage_shim_postgres.testing"]

    def test_something(postgres_uri):        # a fresh schema in a server for the session
        with ss.open_store(postgres_uri.uri, schema=postgres_uri.schema) as store: ...

or, outside pytest, ``with running_server(directory) as server: server.uri()``.

The server runs from ``initdb`` and ``pg_ctl`` in a temporary directory and
listens only on a Unix socket inside it; as root it runs as the ``postgres``
user, since PostgreSQL refuses to run as root. Without the binaries the
fixtures skip, naming what is missing, except under ``CI=true``, where a
missing server is a failure. ``STORAGE_SHIM_POSTGRES_URI`` points the fixtures
at an existing server instead (they then create and drop schemas in it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

BINDIR_VARIABLE = "STORAGE_SHIM_PG_BINDIR"
URI_VARIABLE = "STORAGE_SHIM_POSTGRES_URI"
SUPERUSER = "postgres"
PORT = 5432
"""Any port works: the socket lives in the server's own directory, and TCP is off."""
SERVER_SETTINGS = {
    "listen_addresses": "",
    "max_connections": "200",
    "fsync": "on",
    "synchronous_commit": "on",
    "log_min_messages": "warning",
}
_RUN_AS_USER = "postgres"


class ServerUnavailable(Exception):
    """No PostgreSQL binaries on this machine (the message says what was looked for)."""


@dataclass(frozen=True)
class Server:
    directory: str
    socket_directory: str
    port: int
    user: str

    def uri(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URI reaching the server through its socket."""
        query = urllib.parse.urlencode({"host": self.socket_directory, "port": self.port})
        return f"postgresql://{self.user}@/{database}?{query}"


@dataclass(frozen=True)
class Schema:
    """A fresh PostgreSQL schema: open stores with ``open_store(uri, schema=schema)``."""

    uri: str
    schema: str


def find_bindir() -> str:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``; raises ServerUnavailable."""
    candidates = []
    if os.environ.get(BINDIR_VARIABLE):
        candidates.append(os.environ[BINDIR_VARIABLE])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            done = subprocess.run(  # noqa: S603  # the pg_config found on PATH
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(done.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    for directory in candidates:
        if all(os.access(os.path.join(directory, p), os.X_OK) for p in _PROGRAMS):
            return directory
    raise ServerUnavailable(
        f"no PostgreSQL server binaries ({', '.join(_PROGRAMS)}) found in ${BINDIR_VARIABLE},"
        f" pg_config --bindir, /usr/lib/postgresql/*/bin or PATH (looked in:"
        f" {', '.join(candidates) or 'nothing found'}); on Debian: apt-get install postgresql"
    )


_PROGRAMS = ("initdb", "pg_ctl", "postgres")


def _version(path: str) -> tuple[int, ...]:
    name = os.path.basename(os.path.dirname(path))
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _run(command: list[str], *, as_postgres: bool, log: str | None = None) -> None:
    """Run ``command`` (as the ``postgres`` user when asked); raise with its output on failure."""
    done = subprocess.run(  # noqa: S603  # an argument list of the server's own programs
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        user=_RUN_AS_USER if as_postgres else None,
        group=_RUN_AS_USER if as_postgres else None,
        extra_groups=[] if as_postgres else None,
    )
    if done.returncode != 0:
        tail = ""
        if log and os.path.exists(log):
            with open(log, encoding="utf-8", errors="replace") as file:
                tail = "".join(file.readlines()[-20:])
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}{tail}"
        )


@contextlib.contextmanager
def running_server(parent: str | None = None) -> Iterator[Server]:
    """Start a fresh server in a new directory under ``parent``; stop and delete it afterwards."""
    bindir = find_bindir()
    as_postgres = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_postgres:
        import pwd  # noqa: PLC0415  # POSIX only, like running as root

        try:
            pwd.getpwnam(_RUN_AS_USER)
        except KeyError:
            raise ServerUnavailable(
                f"PostgreSQL refuses to run as root, and there is no {_RUN_AS_USER!r} user to run"
                " it as (the postgresql package creates one)"
            ) from None
    directory = tempfile.mkdtemp(prefix="ss-pg-", dir=parent)
    try:
        data, sockets, log = (os.path.join(directory, n) for n in ("data", "run", "server.log"))
        os.mkdir(sockets, 0o700)
        if as_postgres:
            for path in (directory, sockets):
                shutil.chown(path, _RUN_AS_USER, _RUN_AS_USER)
        initdb = [os.path.join(bindir, "initdb"), "-D", data, "-U", SUPERUSER]
        initdb += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
        _run(initdb, as_postgres=as_postgres)
        settings = [f"-c {name}={shlex.quote(value)}" for name, value in SERVER_SETTINGS.items()]
        options = " ".join([f"-k {shlex.quote(sockets)}", f"-p {PORT}", *settings])
        pg_ctl = os.path.join(bindir, "pg_ctl")
        start = [pg_ctl, "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start"]
        _run(start, as_postgres=as_postgres, log=log)
        try:
            yield Server(directory, sockets, PORT, SUPERUSER)
        finally:
            stop = [pg_ctl, "-D", data, "-m", "fast", "-w", "-t", "60", "stop"]
            try:
                _run(stop, as_postgres=as_postgres, log=log)
            except RuntimeError:
                _run([*stop[:4], "immediate", *stop[5:]], as_postgres=as_postgres, log=log)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def new_schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def drop_schema(uri: str, schema: str) -> None:
    import psycopg  # noqa: PLC0415  # only the fixtures' clean-up needs it
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(uri, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def skip_or_fail(reason: str) -> None:
    """Skip the test for lack of a server, except under ``CI=true``, where that fails it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no PostgreSQL server for the tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server_uri() -> Iterator[str]:
    """A server's URI for the whole session: one started here, or ``$STORAGE_SHIM_POSTGRES_URI``."""
    given = os.environ.get(URI_VARIABLE)
    if given:
        yield given
        return
    try:
        server_context = running_server()
        server = server_context.__enter__()
    except ServerUnavailable as exc:
        skip_or_fail(str(exc))
        return
    try:
        yield server.uri()
    finally:
        server_context.__exit__(None, None, None)


@pytest.fixture
def postgres_uri(postgres_server_uri: str) -> Iterator[Schema]:
    """A schema of its own for one test in the session's server, dropped afterwards."""
    schema = Schema(postgres_server_uri, new_schema_name())
    yield schema
    drop_schema(schema.uri, schema.schema)
