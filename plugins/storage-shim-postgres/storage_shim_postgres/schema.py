"""The tables: names, their creation on first use, and the schema-version check.

Three tables per store, named after the ``table`` option (default
``storage_shim_documents``): the documents, ``<table>_quarantine`` for corrupt
documents moved aside, and ``<table>_meta`` holding the layout version. Names
are validated and always reach SQL as quoted identifiers, never by formatting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .errors import SchemaMissingError, SchemaVersionError

SCHEMA_VERSION = 1
DEFAULT_TABLE = "storage_shim_documents"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_CREATION_LOCK = -0x5354_4F52_4147_4553  # a constant advisory lock id: one creator at a time


def check_name(kind: str, name: str) -> str:
    """Lower-case identifiers of at most 48 characters, so ``<table>_quarantine`` fits in 63."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{kind} {name!r} must be a lower-case SQL identifier: a letter or '_', then letters,"
            " digits or '_', 48 characters at most"
        )
    return name


@dataclass(frozen=True)
class Names:
    schema: str
    table: str

    @property
    def documents(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    @property
    def quarantine(self) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.table}_quarantine")

    @property
    def meta(self) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.table}_meta")

    @property
    def shown(self) -> str:
        return f"{self.schema}.{self.table}"


def _statements(names: Names) -> list[sql.Composed]:
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.schema)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            ' key text COLLATE "C" PRIMARY KEY,'
            " data bytea NOT NULL,"
            " version bigint NOT NULL DEFAULT 1,"
            " updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(names.documents),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            ' key text COLLATE "C" NOT NULL,'
            " data bytea NOT NULL,"
            " quarantined_at timestamptz NOT NULL DEFAULT now())"
        ).format(names.quarantine),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
            " schema_version integer NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        ).format(names.meta),
        sql.SQL("INSERT INTO {} (schema_version) VALUES ({}) ON CONFLICT DO NOTHING").format(
            names.meta, sql.Literal(SCHEMA_VERSION)
        ),
    ]


def _tables_present(connection: psycopg.Connection[tuple[object, ...]], names: Names) -> bool:
    wanted = [names.table, f"{names.table}_quarantine", f"{names.table}_meta"]
    row = connection.execute(
        "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = ANY(%s)",
        [names.schema, wanted],
    ).fetchone()
    return row is not None and row[0] == len(wanted)


def ensure_schema(
    connection: psycopg.Connection[tuple[object, ...]],
    names: Names,
    *,
    create: bool,
    shown_location: str,
) -> None:
    """Create the tables when missing (if ``create``), then check their layout version.

    Creation runs in one transaction under an advisory lock, so processes
    opening the same new store at once do not trip over each other's DDL.
    """
    if not _tables_present(connection, names):
        if not create:
            raise SchemaMissingError(
                f"the tables of {names.shown} do not exist in {shown_location}, and the store was"
                f" opened with create_schema=False; create them once with"
                f" `storage-shim init '{shown_location}'` (as a role allowed to create tables)"
            )
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATION_LOCK])
            for statement in _statements(names):
                connection.execute(statement)
    row = connection.execute(sql.SQL("SELECT schema_version FROM {}").format(names.meta)).fetchone()
    version = row[0] if row else None
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{names.shown} in {shown_location} has layout version {version!r}; this plugin"
            f" uses version {SCHEMA_VERSION}: upgrade storage-shim-postgres"
        )
