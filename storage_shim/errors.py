"""The exceptions a host can meet.

Every failure of the library is a :class:`StorageError`, with the underlying
exception chained as ``__cause__``. Each also derives from the built-in
exception a caller would naturally catch (``LookupError``, ``ValueError``,
``TypeError``, ``TimeoutError``, ``OSError``), so existing ``except`` clauses
keep working.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._types import Key


def _show(key: Key | None) -> str:
    return "/".join(key) if key is not None else "?"


class StorageError(Exception):
    """Base class of every error raised by storage_shim."""


class NotFoundError(StorageError, LookupError):
    """No document is stored under the key."""

    def __init__(self, key: Key) -> None:
        super().__init__(f"no document at key {_show(key)!r}")
        self.key = key


class CorruptDocumentError(StorageError):
    """A stored document exists but is not valid JSON.

    The library never replaces such a document with a default: the bytes stay
    where they are for a person to look at, or a ``storage_shim_on_corrupt``
    hook moves them to the quarantine (``quarantined_to`` then says where).
    """

    def __init__(self, key: Key | None, path: str, reason: str) -> None:
        super().__init__(f"corrupt document at {path}: {reason}")
        self.key = key
        self.path = path
        self.reason = reason
        self.quarantined_to: str | None = None


class InvalidKeyError(StorageError, ValueError):
    """The key is not allowed: it could escape the store or clash with its own files."""

    def __init__(self, key: object, reason: str) -> None:
        super().__init__(f"invalid key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class UnsafePathError(InvalidKeyError):
    """The key is well formed but its path leads through a symbolic link."""


class SerializationError(StorageError, TypeError):
    """The value cannot be stored as JSON that reads back equal.

    ``json_path`` names the offending value, for example ``$.items[3].price``.
    """

    def __init__(self, json_path: str, reason: str) -> None:
        shown = json_path if len(json_path) <= 100 else f"{json_path[:50]}...{json_path[-40:]}"
        super().__init__(f"cannot serialise value at {shown}: {reason}")
        self.json_path = json_path
        self.reason = reason


class LockTimeoutError(StorageError, TimeoutError):
    """A cross-process lock was not acquired in time."""

    def __init__(self, key: Key | None, lock_path: str, timeout: float) -> None:
        super().__init__(
            f"timed out after {timeout:g}s waiting for the lock of {_show(key)!r} ({lock_path})"
        )
        self.key = key
        self.lock_path = lock_path
        self.timeout = timeout


class UnknownBackendError(StorageError, LookupError):
    """No backend of that name is registered."""

    def __init__(self, name: str, known: Iterable[str], *, kind: str = "backend") -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(
            f"unknown {kind} {name!r}; registered {kind}s: {', '.join(self.known) or 'none'}"
        )


class InvalidOptionError(StorageError, TypeError):
    """``open_store`` got an option that none of the store's backends accepts (a typo, usually)."""


class InvalidLocationError(StorageError, ValueError):
    """The location does not suit the backend: a URI for a file backend, or another scheme."""


class UnsupportedOperationError(StorageError):
    """The backend does not offer this operation (for example transactions)."""


class StorageIOError(StorageError, OSError):
    """The operating system refused an operation (full disk, I/O error, permissions).

    Carries ``errno`` and ``filename`` like :class:`OSError`; the original
    error is the ``__cause__``. A write that fails leaves the previous document
    in place, with one exception: when only the final directory ``fsync``
    fails, readers already see the new document, which is not known to be
    durable.
    """


class StoreClosedError(StorageError):
    """The store, or the backend behind it, was already closed."""


class PluginError(StorageError):
    """A plugin could not be loaded, or it broke the hook contract."""


class DuplicateBackendError(PluginError):
    """Two or more plugins register a backend under the same name."""

    def __init__(self, clashes: dict[str, list[str]]) -> None:
        self.clashes = clashes
        lines = [f"{name!r} from {', '.join(providers)}" for name, providers in clashes.items()]
        super().__init__("backend names registered more than once: " + "; ".join(lines))


class BackendPoisonedError(StorageError):
    """An earlier write or fsync failed, so the backend refuses every call until reopened.

    After a failed ``fsync`` the kernel may have dropped the unwritten pages and
    a second ``fsync`` can report success for data never written, so the only
    safe continuation is to close the store and open it again, which recovers
    from what really reached the disk. The first failure is the ``__cause__``.
    """


class CorruptJournalError(StorageError):
    """The journal holds valid records after an invalid one: media corruption, not a torn write.

    Raised only with ``strict=True``; by default recovery keeps the valid prefix.
    """
