"""``atomic``: write a temporary file, fsync it, rename it over the document.

Readers see the old document or the new one, never a mix, without taking any
lock; after a crash the name points at one complete version. ``update()``
serialises read-modify-write through a sidecar lock file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterable

from .._types import Key
from ..backend import BackendSpec, Capabilities, Durability, WriteOutcome
from ..fs import CREATE_EXCL_FLAGS, FileSystem
from ..markers import hookimpl
from .files import FileBackend


class AtomicBackend(FileBackend):
    capabilities = Capabilities(
        atomic_reads=True, crash_safe=True, durable=True, cross_process=True
    )

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        durability: Durability = "fsync",
        lock_timeout: float = 30.0,
        replace_timeout: float = 2.0,
        fs: FileSystem | None = None,
    ) -> None:
        super().__init__(location, durability=durability, lock_timeout=lock_timeout, fs=fs)
        self.replace_timeout = replace_timeout

    def write(self, key: Key, data: bytes) -> WriteOutcome:
        """Plain writes take the key's lock too, or they could land inside an ``update()``."""
        with self.lock(key):
            return self._write_unlocked(key, data)

    def _write_unlocked(self, key: Key, data: bytes) -> WriteOutcome:
        path = self.path(key)
        self.prepare_directory(path)
        mode = self._existing_mode(path)
        temp = self.temp_path(path)
        try:
            fd = self.fs.open(temp, CREATE_EXCL_FLAGS, 0o666 if mode is None else mode)
            try:
                if mode is not None and sys.platform != "win32":
                    self.fs.chmod(temp, mode)  # the umask may have narrowed it
                self.fs.write_all(fd, data)
                if self._sync:
                    self.fs.fsync(fd, full=self._full)
            finally:
                self.fs.close(fd)
            retries = self._replace(temp, path)
        except BaseException:
            self._discard(temp)
            raise
        return self.outcome(path, self._sync, retries)

    def remove(self, key: Key) -> bool:
        with self.lock(key):
            return self.unlink_document(key)

    def _existing_mode(self, path: str) -> int | None:
        try:
            st = self.fs.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None

    def _discard(self, temp: str) -> None:
        with contextlib.suppress(OSError):
            self.fs.unlink(temp)


@hookimpl
def storage_shim_backends() -> Iterable[BackendSpec]:
    return [BackendSpec("atomic", AtomicBackend, "temp file, fsync, rename, directory fsync")]
