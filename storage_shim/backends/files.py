"""What every file backend shares: the layout, path safety, listing and locks.

Documents live at ``<location>/<segments>.json``. The library's own files live
under ``<location>/.storage_shim/`` or start with a dot next to the document,
so they can never collide with a key (keys cannot start with a dot).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import errno
import logging
import os
import re
import stat
import threading
import time
import weakref
from collections.abc import Iterator, Sequence

from .._threads import ThreadKeys
from .._types import Key
from ..backend import Backend, Durability, WriteOutcome
from ..errors import (
    InvalidLocationError,
    LockTimeoutError,
    NotFoundError,
    StorageError,
    UnsafePathError,
)
from ..fs import CREATE_EXCL_FLAGS, FileSystem
from ..keys import SUFFIX, is_directory_segment, is_valid_segment, relative_path
from ..locations import redact, uri_scheme

STATE_DIR = ".storage_shim"
"""The library's private directory inside a store."""
QUARANTINE_AREA = "quarantine"
"""Corrupt documents moved aside: ``.storage_shim/quarantine/<UTC time>/<key path>.json``."""
TEMP_MARKER = ".ss-tmp"
"""Every temporary file the library creates ends with this, so sweeps never touch a user's file."""
SWEEP_LOCK_WAIT = 0.05
"""How long the sweep waits for a document's lock before deciding a live writer holds it."""
_TEMP_NAME = re.compile(
    r"\.(?P<target>.+)\.[0-9a-f]{16}(?P<marker>(?:\.[a-z]+)?" + re.escape(TEMP_MARKER) + ")"
)
logger = logging.getLogger("storage_shim")


def temporary_target(name: str) -> tuple[str, str] | None:
    """For a name ``temp_path()`` made, ``.<target>.<16 hex><marker>``: (target, marker)."""
    match = _TEMP_NAME.fullmatch(name)
    return (match["target"], match["marker"]) if match else None


_WINDOWS_SHARING_ERRORS = frozenset({5, 32, 33})
"""Access denied, sharing violation, lock violation: another program has the file open."""


def is_transient_replace_error(exc: OSError) -> bool:
    return (
        isinstance(exc, PermissionError)
        and getattr(exc, "winerror", None) in _WINDOWS_SHARING_ERRORS
    )


class FileBackend(Backend):
    """Base of the backends that keep one JSON file per key below ``location``."""

    replace_timeout: float = 2.0
    """Seconds to retry a replace that Windows refuses while another program has the file."""

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        durability: Durability = "fsync",
        lock_timeout: float = 30.0,
        fs: FileSystem | None = None,
    ) -> None:
        if uri_scheme(location) is not None:
            raise InvalidLocationError(
                f"{type(self).__name__} keeps files in a directory, not at {redact(location)!r}"
            )
        self.root = os.path.abspath(os.fspath(location))
        self.durability = durability
        self.lock_timeout = lock_timeout
        self.fs = fs if fs is not None else FileSystem()
        self._sync = durability != "none"
        self._full = durability == "full"
        self._thread_locks: weakref.WeakValueDictionary[Key, threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._thread_locks_guard = threading.Lock()
        self._held = ThreadKeys()
        self.fs.makedirs(self.root)

    @property
    def namespace(self) -> str:
        return f"files:{self.root}"

    # -- paths ----------------------------------------------------------------------
    def path(self, key: Key) -> str:
        """The document's file, after checking no directory on the way is a symbolic link."""
        return self._checked(key, key[:-1], key[-1] + SUFFIX)

    def location_of(self, key: Key) -> str:
        return os.path.join(self.root, relative_path(key))

    def private_path(self, area: str, key: Key, suffix: str) -> str:
        """``<location>/.storage_shim/<area>/<segments><suffix>``: the library's per-key files."""
        return self._checked(key, (STATE_DIR, area, *key[:-1]), key[-1] + suffix)

    def _checked(self, key: Key, directories: tuple[str, ...], name: str) -> str:
        """Join below the root, refusing a planted symbolic link on the way out of the store."""
        current = self.root
        for directory in directories:
            current = os.path.join(current, directory)
            try:
                mode = self.fs.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return os.path.join(self.root, *directories, name)
            if stat.S_ISLNK(mode):
                raise UnsafePathError(key, f"{current} is a symbolic link")
        return os.path.join(current, name)

    def temp_path(self, target: str) -> str:
        """A fresh, recognisable temporary name beside ``target``."""
        head, tail = os.path.split(target)
        return os.path.join(head, f".{tail}.{os.urandom(8).hex()}{TEMP_MARKER}")

    # -- opening --------------------------------------------------------------------
    def recover(self) -> Sequence[Key]:
        self.sweep_temporary_files()
        return ()

    def sweep_temporary_files(self) -> list[str]:
        """Delete the temporary files that dead writers left beside documents; returns them.

        Only names :meth:`temp_path` makes for a document, in directories a key
        can reach; the private area under ``.storage_shim`` is left to the
        backends keeping files there. Each file is deleted under the lock its
        writer holds while it exists (see :meth:`temporary_file_lock`); a lock
        still taken after :data:`SWEEP_LOCK_WAIT` means a live writer, whose
        file is kept. A file that cannot be deleted is logged: it only costs
        space, and the next opening tries again.
        """
        removed: list[str] = []
        for key, marker, path in self.temporary_files():
            lock = self.temporary_file_lock(key, marker)
            if lock is None:
                continue
            try:
                with lock:
                    self.fs.unlink(path)
            except LockTimeoutError:
                continue
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (OSError, StorageError) as exc:
                logger.warning("could not remove the temporary file %s: %s", path, exc)
                continue
            removed.append(path)
        return removed

    def temporary_file_lock(
        self, key: Key, marker: str
    ) -> contextlib.AbstractContextManager[None] | None:
        """The lock a writer holds while its temporary file of ``key`` ending in ``marker`` exists.

        None for a kind of temporary file this backend cannot tell from a live
        writer's: it is kept. A backend naming its temporary files apart (with
        a marker like ``.jnl.ss-tmp``) returns the lock its writers hold for those.
        """
        return self._lock(key, SWEEP_LOCK_WAIT) if marker == TEMP_MARKER else None

    def temporary_files(self) -> Iterator[tuple[Key, str, str]]:
        """Every temporary file of this library beside a document: (key, marker, path)."""
        return self._temporary_files(self.root, ())

    def _temporary_files(self, directory: str, prefix: Key) -> Iterator[tuple[Key, str, str]]:
        try:
            entries = list(self.fs.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            logger.warning("could not look for temporary files in %s: %s", directory, exc)
            return
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                found = temporary_target(name) if entry.is_file else None
                if found is None or not found[0].endswith(SUFFIX):
                    continue
                stem = found[0][: -len(SUFFIX)]
                if is_valid_segment(stem):
                    yield (*prefix, stem), found[1], os.path.join(directory, name)
            elif entry.is_dir and is_valid_segment(name) and is_directory_segment(name):
                yield from self._temporary_files(os.path.join(directory, name), (*prefix, name))

    @contextlib.contextmanager
    def refusing_links(self, key: Key) -> Iterator[None]:
        """Turn the ELOOP of an ``O_NOFOLLOW`` open of a linked document into UnsafePathError."""
        try:
            yield
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(key, f"{exc.filename} is a symbolic link") from exc
            raise

    # -- reading --------------------------------------------------------------------
    def _read_unlocked(self, key: Key) -> bytes:
        try:
            with self.refusing_links(key):
                return self.fs.read_file(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(key) from None

    def read(self, key: Key) -> bytes:
        return self._read_unlocked(key)

    def exists(self, key: Key) -> bool:
        return self.fs.exists(self.path(key))

    def list(self, prefix: Key) -> Iterator[Key]:
        if not prefix:
            yield from self._walk(self.root, prefix)
            return
        if self.fs.exists(self.path(prefix)):
            yield prefix
        yield from self._walk(self._checked(prefix, prefix, ""), prefix)

    def _walk(self, directory: str, prefix: Key) -> Iterator[Key]:
        found: builtins.list[Key] = []
        self._collect(directory, prefix, found)
        return iter(found)

    def _collect(self, directory: str, prefix: Key, found: builtins.list[Key]) -> None:
        """Depth first into ``found``, in key order: the store's sort then has nothing to do.

        Each directory's names are sorted (C speed, a few at a time) with a
        document before the directory of the same name, as ``("a",) < ("a", "b")``.
        """
        try:
            entries = list(self.fs.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        segments: builtins.list[tuple[str, bool]] = []
        for name, is_dir, is_file in entries:
            if name[0] == ".":
                continue
            if is_dir:
                if is_valid_segment(name) and is_directory_segment(name):
                    segments.append((name, True))
            elif is_file and name.endswith(SUFFIX):
                stem = name[: -len(SUFFIX)]
                if is_valid_segment(stem):
                    segments.append((stem, False))
        segments.sort()
        for segment, is_dir in segments:
            if is_dir:
                self._collect(os.path.join(directory, segment), (*prefix, segment), found)
            else:
                found.append((*prefix, segment))

    def quarantine(self, key: Key, data: bytes) -> str | None:
        """Move the document's file into the quarantine, by rename, under the key's lock.

        The file itself moves, so a program outside the library that replaced
        it meanwhile loses nothing: bytes other than ``data`` go back where they
        were, unless an even newer file is there by then.
        """
        with self.lock(key):
            try:
                if self.read(key) != data:
                    return None
            except NotFoundError:
                return None
            path, target = self.path(key), self.quarantine_path(key)
            self.fs.makedirs(os.path.dirname(target), sync=True, full=self._full)
            try:
                self.fs.replace(path, target)
            except (FileNotFoundError, NotADirectoryError):
                return None
            self.fs.fsync_dir(os.path.dirname(target), full=self._full)
            self.fs.fsync_dir(os.path.dirname(path), full=self._full)
            if self.fs.read_file(target) == data:
                return target
            try:
                self.fs.link(target, path)  # fails if an even newer file is there: keep that
            except OSError as exc:
                logger.warning("left %s in the quarantine, not put back: %s", target, exc)
                return None
            self.fs.unlink(target)
            self.fs.fsync_dir(os.path.dirname(path), full=self._full)
            return None

    def quarantine_path(self, key: Key) -> str:
        """A new ``.storage_shim/quarantine/<UTC time>/<key path>.json``."""
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        area = (STATE_DIR, QUARANTINE_AREA, stamp, *key[:-1])
        return self._checked(key, area, key[-1] + SUFFIX)

    def keep_in_quarantine(self, key: Key, data: bytes) -> str:
        """Write a durable copy of ``data`` into the quarantine; returns its path."""
        target = self.quarantine_path(key)
        self.fs.makedirs(os.path.dirname(target), sync=True, full=self._full)
        fd = self.fs.open(target, CREATE_EXCL_FLAGS)
        try:
            self.fs.write_all(fd, data)
            self.fs.fsync(fd, full=self._full)
        finally:
            self.fs.close(fd)
        self.fs.fsync_dir(os.path.dirname(target), full=self._full)
        return target

    # -- writing helpers ------------------------------------------------------------
    def prepare_directory(self, path: str) -> None:
        self.fs.makedirs(os.path.dirname(path), sync=self._sync, full=self._full)

    def sync_directory(self, path: str) -> bool:
        return self._sync and self.fs.fsync_dir(os.path.dirname(path), full=self._full)

    def write_file(self, path: str, data: bytes, flags: int, *, truncate: bool = False) -> bool:
        """Write ``data`` at offset 0 of ``path``; returns whether it was fsynced."""
        fd = self.fs.open(path, flags)
        try:
            self.fs.write_all(fd, data)
            if truncate:
                self.fs.ftruncate(fd, len(data))
            if self._sync:
                self.fs.fsync(fd, full=self._full)
        finally:
            self.fs.close(fd)
        return self._sync

    def unlink_document(self, key: Key) -> bool:
        path = self.path(key)
        try:
            self.fs.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        self.sync_directory(path)
        return True

    def outcome(self, path: str, file_synced: bool, retries: int = 0) -> WriteOutcome:
        return WriteOutcome(file_synced, self.sync_directory(path), retries)

    def _replace(self, temp: str, path: str) -> int:
        """Rename, retrying the sharing violations Windows gives while a reader has the file.

        Returns the number of retries.
        """
        deadline = time.monotonic() + self.replace_timeout
        delay, retries = 0.001, 0
        while True:
            try:
                self.fs.replace(temp, path)
            except OSError as exc:
                if not is_transient_replace_error(exc) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay, retries = min(delay * 2, 0.1), retries + 1
            else:
                return retries

    # -- locks ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _thread_lock(self, key: Key, timeout: float | None = None) -> Iterator[None]:
        """Excludes other threads of this process; re-entrant for the holding thread."""
        held = self._held.keys
        if key in held:
            yield
            return
        timeout = self.lock_timeout if timeout is None else timeout
        with self._thread_locks_guard:
            thread_lock = self._thread_locks.get(key)
            if thread_lock is None:
                thread_lock = self._thread_locks[key] = threading.Lock()
        if not thread_lock.acquire(timeout=timeout if timeout >= 0 else -1):
            raise LockTimeoutError(key, "<threads of this process>", timeout)
        held.add(key)
        try:
            yield
        finally:
            held.discard(key)
            thread_lock.release()

    def lock_path(self, key: Key) -> str:
        return self.private_path("locks", key, ".lock")

    def lock(self, key: Key) -> contextlib.AbstractContextManager[None]:
        """Threads queue on an in-process lock, then one of them takes the sidecar file lock."""
        return self._lock(key, self.lock_timeout)

    @contextlib.contextmanager
    def _lock(self, key: Key, timeout: float) -> Iterator[None]:
        if key in self._held.keys:
            yield
            return
        lock_path = self.lock_path(key)
        started = time.monotonic()
        with self._thread_lock(key, timeout), contextlib.ExitStack() as stack:
            self.fs.makedirs(os.path.dirname(lock_path))
            remaining = timeout
            if remaining >= 0:  # one timeout for both waits
                remaining = max(0.0, remaining - (time.monotonic() - started))
            try:
                stack.enter_context(self.fs.lock(lock_path, remaining))
            except TimeoutError:
                raise LockTimeoutError(key, lock_path, timeout) from None
            yield
