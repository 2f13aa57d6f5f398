"""What the ``postgres`` backend raises besides the core's errors.

Every message names the server by its URI without the password; the
PostgreSQL exception stays chained as ``__cause__``.
"""

from __future__ import annotations

import storage_shim as ss


class PostgresError(ss.StorageError):
    """The server refused an operation for a reason no more specific error covers."""


class PostgresConnectionError(PostgresError, ss.StorageIOError):
    """No connection to the server, or the connection broke during the operation.

    ``committed`` tells what became of the operation's changes: ``False`` when
    none of them were committed (a transaction that was still open is rolled
    back by the server when its connection ends), ``None`` when the connection
    broke while the commit itself was in flight, so the change may or may not
    have been made: read it back once the server is reachable again.
    """

    def __init__(self, message: str, *, committed: bool | None = False) -> None:
        super().__init__(message)
        self.committed = committed


class SchemaMissingError(PostgresError):
    """The tables do not exist and the store was opened with ``create_schema=False``."""


class SchemaVersionError(PostgresError):
    """The tables were made by a newer version of this plugin, whose layout this one cannot use."""
