"""storage_shim: JSON documents on plain files that never tear, never vanish, never lose an update.

>>> import storage_shim as ss
>>> with ss.open_store(location, backend="atomic") as store:   # doctest: +SKIP
...     store.write(("session", "ses_1"), {"title": "hello"})
"""

from __future__ import annotations

from .__about__ import __version__
from ._types import Key, KeyLike
from .backend import (
    Backend,
    BackendSpec,
    BackendTransaction,
    Capabilities,
    Durability,
    Receipt,
    WriteOutcome,
)
from .errors import (
    BackendPoisonedError,
    CorruptDocumentError,
    CorruptJournalError,
    DuplicateBackendError,
    InvalidKeyError,
    InvalidLocationError,
    InvalidOptionError,
    LockTimeoutError,
    NotFoundError,
    PluginError,
    SerializationError,
    StorageError,
    StorageIOError,
    StoreClosedError,
    UnknownBackendError,
    UnsafePathError,
    UnsupportedOperationError,
)
from .fs import FileSystem
from .keys import parse_key
from .markers import hookimpl, hookspec
from .routing import Routes
from .store import Store, backend_specs, open_store
from .transaction import Transaction

__all__ = [
    "Backend",
    "BackendPoisonedError",
    "BackendSpec",
    "BackendTransaction",
    "Capabilities",
    "CorruptDocumentError",
    "CorruptJournalError",
    "DuplicateBackendError",
    "Durability",
    "FileSystem",
    "InvalidKeyError",
    "InvalidLocationError",
    "InvalidOptionError",
    "Key",
    "KeyLike",
    "LockTimeoutError",
    "NotFoundError",
    "PluginError",
    "Receipt",
    "Routes",
    "SerializationError",
    "StorageError",
    "StorageIOError",
    "Store",
    "StoreClosedError",
    "Transaction",
    "UnknownBackendError",
    "UnsafePathError",
    "UnsupportedOperationError",
    "WriteOutcome",
    "__version__",
    "backend_specs",
    "hookimpl",
    "hookspec",
    "open_store",
    "parse_key",
]
