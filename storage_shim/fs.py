"""The file-system object: the file backends' only door to the operating system.

Every system call a file backend makes goes through one :class:`FileSystem`
instance, passed to the backend as the ``fs`` option. Tests substitute a
subclass that records the calls (to enumerate crash states) or fails the Nth
one (to inject faults), so a backend must never call :mod:`os` directly.

The primitives are deliberately raw: descriptors and ``str`` paths. The few
composite helpers (:meth:`write_all`, :meth:`read_file`, :meth:`makedirs`) are
built on the primitives so that a recording subclass sees every step.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import threading

if sys.platform == "darwin":  # pragma: no cover
    import fcntl
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

import filelock

_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
READ_FLAGS = os.O_RDONLY | _O_BINARY | _O_CLOEXEC | _O_NOFOLLOW
CREATE_EXCL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY | _O_CLOEXEC | _O_NOFOLLOW
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | _O_BINARY | _O_CLOEXEC | _O_NOFOLLOW
TRUNCATE_FLAGS = WRITE_FLAGS | os.O_TRUNC
READ_WRITE_FLAGS = os.O_RDWR | _O_BINARY | _O_CLOEXEC | _O_NOFOLLOW
_CHUNK = 1 << 20
_HAS_FDATASYNC = hasattr(os, "fdatasync")
_HAS_PWRITE = hasattr(os, "pwrite")
_SEEK_THEN_ACT = threading.Lock()
"""Where positional I/O is emulated by a seek and a read or write, the pair must not interleave."""

CAN_SYNC_DIRECTORIES = sys.platform != "win32"
"""Windows cannot open a directory for fsync from Python; renames there are journaled by NTFS."""


def _full_sync(fd: int) -> None:
    """Flush to stable storage, through the drive's cache where the OS needs asking."""
    if sys.platform == "darwin":  # pragma: no cover  # macOS fsync stops at the drive cache
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
        except OSError:  # not every file system supports it (SMB, FAT): plain fsync then
            os.fsync(fd)
        else:
            return
    os.fsync(fd)


class _FileLock:
    def __init__(self, lock: filelock.BaseFileLock, timeout: float) -> None:
        self._lock = lock
        self._timeout = timeout

    def __enter__(self) -> None:
        try:
            self._lock.acquire(timeout=self._timeout)
        except filelock.Timeout as exc:
            raise TimeoutError(str(exc)) from None

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()


def _new_file_lock(path: str) -> filelock.BaseFileLock:
    # No soft-lock fallback: a lock file left by a dead process would freeze others.
    return filelock.FileLock(path, poll_interval=0.001, fallback_to_soft=False)


class _LockCache:
    """The most recently used file-lock objects, by path: building one costs more than using it.

    filelock keeps each thread's hold apart (``thread_local``), so threads
    sharing an object exclude each other as processes do. A thread already
    holding a path gets a fresh object instead (another store on the same file
    system object must wait, not re-enter), and so does a forked child, which
    filelock refuses to let reuse its parent's objects.
    """

    size = 1024

    def __init__(self) -> None:
        self._locks: OrderedDict[str, filelock.BaseFileLock] = OrderedDict()
        self._guard = threading.Lock()
        self._pid = os.getpid()

    def get(self, path: str) -> filelock.BaseFileLock:
        with self._guard:
            if self._pid != os.getpid():
                self._locks.clear()
                self._pid = os.getpid()
            lock = self._locks.get(path)
            if lock is None:
                lock = self._locks[path] = _new_file_lock(path)
                if len(self._locks) > self.size:
                    self._locks.popitem(last=False)  # a holder keeps its object alive
            else:
                self._locks.move_to_end(path)
        return _new_file_lock(path) if lock.is_locked else lock


class Entry(NamedTuple):
    """One name in a directory listing (a tuple: a listing makes thousands)."""

    name: str
    is_dir: bool
    is_file: bool


class FileSystem:
    """Real file-system calls. Subclass and override the primitives to record or break them."""

    # -- primitives -----------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        if _HAS_PWRITE:
            return os.pwrite(fd, data, offset)
        with _SEEK_THEN_ACT:  # pragma: no cover  # Windows: a shared position, so one at a time
            os.lseek(fd, offset, os.SEEK_SET)
            return os.write(fd, data)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if _HAS_PWRITE:
            return os.pread(fd, size, offset)
        with _SEEK_THEN_ACT:  # pragma: no cover
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, size)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        """Flush ``fd``; ``data_only`` skips metadata not needed to read the data back."""
        if full:
            _full_sync(fd)
        elif data_only and _HAS_FDATASYNC:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def fsync_dir(self, path: str, *, full: bool = False) -> bool:
        """Flush a directory's entries; returns False where the platform cannot."""
        if not CAN_SYNC_DIRECTORIES:  # pragma: no cover
            return False
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            self.fsync(fd, full=full)
        finally:
            os.close(fd)
        return True

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def link(self, src: str, dst: str) -> None:
        """A second name for ``src``; ``FileExistsError`` when ``dst`` exists."""
        os.link(src, dst)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def lock(self, path: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        """An exclusive lock on the sidecar file ``path``; ``TimeoutError`` when not acquired.

        A kernel lock (``flock``, ``LockFileEx``) through filelock: it dies with its
        holder, so a crashed process never leaves a stale lock. The library never
        locks a data file: a rename-replace would leave the lock on the old inode.
        """
        cache = self.__dict__.get("_lock_cache")
        if cache is None:  # set lazily: subclasses need not call __init__
            cache = self.__dict__.setdefault("_lock_cache", _LockCache())
        return _FileLock(cache.get(path), timeout)

    def scandir(self, path: str) -> Iterator[Entry]:
        with os.scandir(path) as entries:
            for entry in entries:
                yield Entry(
                    entry.name,
                    entry.is_dir(follow_symlinks=False),
                    entry.is_file(follow_symlinks=False),
                )

    # -- helpers built on the primitives --------------------------------------------
    def write_all(self, fd: int, data: bytes) -> None:
        """Write every byte, looping on short writes."""
        view = memoryview(data)
        while view:
            written = self.write(fd, view[:_CHUNK])
            view = view[written:]

    def pwrite_all(self, fd: int, data: bytes, offset: int) -> None:
        """Write every byte at ``offset``, looping on short writes."""
        view = memoryview(data)
        while view:
            written = self.pwrite(fd, view[:_CHUNK], offset)
            view, offset = view[written:], offset + written

    def read_fd(self, fd: int) -> bytes:
        size = self.fstat(fd).st_size
        first = self.read(fd, max(size, 1) + 1)
        if len(first) <= size:  # a regular file's read stops short only at its end
            return first
        chunks = [first]
        while chunks[-1]:
            chunks.append(self.read(fd, _CHUNK))
        return b"".join(chunks)

    def read_file(self, path: str) -> bytes:
        """The whole content of a regular file; refuses to follow a final symbolic link."""
        fd = self.open(path, READ_FLAGS)
        try:
            return self.read_fd(fd)
        finally:
            self.close(fd)

    def exists(self, path: str) -> bool:
        try:
            return stat.S_ISREG(self.lstat(path).st_mode)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            return False

    def makedirs(self, path: str, *, sync: bool = False, full: bool = False) -> None:
        """Create ``path`` and missing parents; with ``sync``, make each new entry durable."""
        missing: list[str] = []
        current = path
        while True:
            try:
                mode = self.lstat(current).st_mode
            except FileNotFoundError:
                missing.append(current)
                parent = os.path.dirname(current)
                if parent == current:
                    raise
                current = parent
                continue
            if not stat.S_ISDIR(mode):
                raise NotADirectoryError(20, "Not a directory", current)
            break
        for directory in reversed(missing):
            try:
                self.mkdir(directory)
            except FileExistsError:
                continue
            if sync:
                self.fsync_dir(os.path.dirname(directory), full=full)
