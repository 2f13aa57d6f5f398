"""Where a handle's content goes: a store document, or a file of the root published by rename.

A ``.json`` file whose path is a valid key is a document of the store and goes
through its backend (with its locks, log and recovery). Line-oriented files
(JSONL) and JSON files whose names are not keys are replaced by a temporary
file and a rename, or appended to, here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from typing import TYPE_CHECKING, Literal, Protocol

from .._types import Key
from ..errors import NotFoundError
from ..fs import CREATE_EXCL_FLAGS, WRITE_FLAGS
from .content import parses_as_json

if TYPE_CHECKING:
    from .installation import Installation

Policy = Literal["json", "lines"]
TEMP_SUFFIX = ".shim.ss-tmp"
_APPEND_FLAGS = WRITE_FLAGS | os.O_APPEND


def exists_error(path: str) -> FileExistsError:
    return FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)


class Target(Protocol):
    path: str
    policy: Policy

    def read(self) -> bytes | None:
        """The published content; None when there is no file."""

    def exists(self) -> bool: ...

    def replace(self, data: bytes, *, exclusive: bool) -> None:
        """Publish ``data`` whole; ``exclusive`` refuses (FileExistsError) if the file exists."""

    def append(self, data: bytes) -> None:
        """Add ``data`` (whole lines) at the end of the file."""

    def create(self, kind: str) -> None:
        """What opening with ``kind`` (``w``, ``x``, ``a``) does to a line file right away."""


class DocumentTarget:
    """A document of the store: published with the backend's own write."""

    policy: Policy = "json"

    def __init__(self, installation: Installation, key: Key, path: str) -> None:
        self.installation = installation
        self.key = key
        self.path = path

    def read(self) -> bytes | None:
        """The backend's consistent read, read again a few times while the bytes do not parse
        (a writer outside the library may be mid-rewrite), like :meth:`Store.read`."""
        with self.installation.using_store() as store:
            backend = store.backend(store.backend_for(self.key))
            try:
                data = backend.read(self.key)
                for attempt in range(store.read_retries):
                    if parses_as_json(data):
                        break
                    time.sleep(store.read_retry_delay * 2**attempt)
                    data = backend.read_again(self.key)
            except NotFoundError:
                return None
            return data

    def exists(self) -> bool:
        with self.installation.using_store() as store:
            return store.exists(self.key)

    def replace(self, data: bytes, *, exclusive: bool) -> None:
        """The backend's write through the store, so its hooks and error types apply."""
        with self.installation.using_store() as store:
            name = store.backend_for(self.key)
            backend = store.backend(name)
            if not exclusive:
                store._write(self.key, name, backend, data)
                return
            with backend.lock(self.key):
                if backend.exists(self.key):
                    raise exists_error(self.path)
                store._write(self.key, name, backend, data)

    def append(self, data: bytes) -> None:
        raise AssertionError("documents are published whole")  # pragma: no cover

    def create(self, kind: str) -> None:
        raise AssertionError("an empty document is not JSON")  # pragma: no cover


class FileTarget:
    """A file published by the shim itself, through the store's file-system object."""

    def __init__(self, installation: Installation, path: str, policy: Policy) -> None:
        self.installation = installation
        self.path = path
        self.policy = policy
        self.fs = installation.fs

    def read(self) -> bytes | None:
        try:
            return self.fs.read_file(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def replace(self, data: bytes, *, exclusive: bool) -> None:
        """Temporary file, fsync, rename (a hard link when exclusive), directory fsync."""
        fs, installation = self.fs, self.installation
        head, tail = os.path.split(self.path)
        temp = os.path.join(head, f".{tail}.{os.urandom(8).hex()}{TEMP_SUFFIX}")
        mode = self._existing_mode()
        try:
            fd = fs.open(temp, CREATE_EXCL_FLAGS, 0o666 if mode is None else mode)
            try:
                if mode is not None and os.name != "nt":
                    fs.chmod(temp, mode)
                fs.write_all(fd, data)
                if installation.sync:
                    fs.fsync(fd, full=installation.full)
            finally:
                fs.close(fd)
            if exclusive:
                try:
                    os.link(temp, self.path)
                except FileExistsError:
                    raise exists_error(self.path) from None
            else:
                fs.replace(temp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                fs.unlink(temp)
        self._sync_directory()

    def append(self, data: bytes) -> None:
        """One ``write`` on an ``O_APPEND`` descriptor: lines of concurrent writers never mix."""
        created = not self.exists()
        fd = self.fs.open(self.path, _APPEND_FLAGS)
        try:
            self.fs.write_all(fd, data)
            if self.installation.sync:
                self.fs.fsync(fd, full=self.installation.full)
        finally:
            self.fs.close(fd)
        if created:
            self._sync_directory()

    def create(self, kind: str) -> None:
        if kind == "w":
            self.replace(b"", exclusive=False)
            return
        if kind == "a" and self.exists():
            return
        self.fs.close(self.fs.open(self.path, CREATE_EXCL_FLAGS if kind == "x" else WRITE_FLAGS))
        self._sync_directory()

    def _existing_mode(self) -> int | None:
        try:
            st = self.fs.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None

    def _sync_directory(self) -> None:
        if self.installation.sync:
            self.fs.fsync_dir(os.path.dirname(self.path), full=self.installation.full)
