"""A storage_shim backend that keeps every document in one SQLite database.

Installed, it registers the backend ``sqlite`` and the URI scheme ``sqlite``::

    store = storage_shim.open_store("sqlite:///srv/app/storage.sqlite3")
    store = storage_shim.open_store("data/store", backend="sqlite")  # data/store/storage.sqlite3
"""

from __future__ import annotations

from .__about__ import __version__
from .backend import SqliteBackend
from .location import DEFAULT_FILE_NAME, database_path

__all__ = ["DEFAULT_FILE_NAME", "SqliteBackend", "__version__", "database_path"]
