"""SQLite's errors as the ones storage_shim callers catch.

A busy database becomes :class:`~storage_shim.LockTimeoutError`; a full disk,
an I/O error or a permission problem becomes an :class:`OSError` with its
errno, which the store reports as :class:`~storage_shim.StorageIOError`.
Anything else (a corrupt database file, say) propagates and the store wraps it
in a :class:`~storage_shim.StorageError` with the SQLite error as its cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator

from storage_shim import Key, LockTimeoutError

_ERRNOS = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_READONLY: errno.EACCES,
    sqlite3.SQLITE_PERM: errno.EPERM,
}
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def translate(error: sqlite3.Error, *, path: str, timeout: float, key: Key | None) -> Exception:
    """The exception to raise for ``error``: ``error`` itself when nothing fits better."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:
        return error
    primary = code & 0xFF  # extended codes carry the primary one in their low byte
    if primary in _BUSY:
        return LockTimeoutError(key, path, timeout)
    number = _ERRNOS.get(primary)
    if number is None:
        return error
    return OSError(number, f"{os.strerror(number)} ({error})", path)


@contextlib.contextmanager
def translated(path: str, timeout: float, key: Key | None = None) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        better = translate(exc, path=path, timeout=timeout, key=key)
        if better is exc:
            raise
        raise better from exc
