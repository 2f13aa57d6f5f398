"""The journal's writer lock: one writer at a time across threads and processes."""

from __future__ import annotations

import threading

from ..errors import LockTimeoutError
from ..fs import FileSystem


class _Depth(threading.local):
    def __init__(self) -> None:
        self.value = 0


class WriterLock:
    """Threads queue on an in-process lock; the holder then takes the cross-process file lock.

    Re-entrant for the holding thread, so an ``update()`` holding it can commit.
    Each of the two waits may last ``timeout`` seconds.
    """

    def __init__(self, fs: FileSystem, path: str, timeout: float) -> None:
        self.fs = fs
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._depth = _Depth()
        self._file_lock = fs.lock(path, timeout)  # the file system reuses the object

    @property
    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._depth.value > 0

    def __enter__(self) -> None:
        depth = self._depth
        if depth.value:
            depth.value += 1
            return
        if not self._thread_lock.acquire(timeout=self.timeout if self.timeout >= 0 else -1):
            raise LockTimeoutError(None, "<threads of this process>", self.timeout)
        try:
            self._file_lock = self.fs.lock(self.path, self.timeout)  # anew: after a fork too
            self._file_lock.__enter__()
        except TimeoutError:
            self._thread_lock.release()
            raise LockTimeoutError(None, self.path, self.timeout) from None
        except BaseException:
            self._thread_lock.release()
            raise
        depth.value = 1

    def __exit__(self, *exc_info: object) -> None:
        depth = self._depth
        depth.value -= 1
        if depth.value:
            return
        try:
            self._file_lock.__exit__(None, None, None)
        finally:
            self._thread_lock.release()
