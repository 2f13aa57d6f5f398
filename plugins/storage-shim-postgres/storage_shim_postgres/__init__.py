"""storage-shim-postgres: the ``postgres`` backend of storage_shim, documents in a PostgreSQL table.

::

    import storage_shim as ss

    with ss.open_store("postgresql://app@db.example/app") as store:   # picked by the scheme
        store.update("counters/visits", lambda n: n + 1, default=0)
"""

from __future__ import annotations

from .backend import SCHEMES, PostgresBackend, storage_shim_backends
from .errors import PostgresConnectionError, PostgresError, SchemaMissingError, SchemaVersionError
from .schema import DEFAULT_TABLE, SCHEMA_VERSION

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TABLE",
    "SCHEMA_VERSION",
    "SCHEMES",
    "PostgresBackend",
    "PostgresConnectionError",
    "PostgresError",
    "SchemaMissingError",
    "SchemaVersionError",
    "__version__",
    "storage_shim_backends",
]
