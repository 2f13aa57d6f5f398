"""The journal's writer lock: one writer at a time across threads and processes."""

from __future__ import annotations

import contextlib
import threading
import time

from ..errors import LockTimeoutError
from ..fs import FileSystem


class _Depth(threading.local):
    def __init__(self) -> None:
        self.value = 0
        self.file_lock: contextlib.AbstractContextManager[None] | None = None


class WriterLock:
    """Threads queue on an in-process lock; the holder then takes the cross-process file lock.

    Re-entrant for the holding thread, so an ``update()`` holding it can commit.
    """

    def __init__(self, fs: FileSystem, path: str, timeout: float) -> None:
        self.fs = fs
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.Lock()
        self._depth = _Depth()

    @property
    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._depth.value > 0

    def __enter__(self) -> None:
        depth = self._depth
        if depth.value:
            depth.value += 1
            return
        started = time.monotonic()
        if not self._thread_lock.acquire(timeout=self.timeout if self.timeout >= 0 else -1):
            raise LockTimeoutError(None, "<threads of this process>", self.timeout)
        try:
            remaining = self.timeout
            if remaining >= 0:
                remaining = max(0.0, remaining - (time.monotonic() - started))
            file_lock = self.fs.lock(self.path, remaining)
            try:
                file_lock.__enter__()
            except TimeoutError:
                raise LockTimeoutError(None, self.path, self.timeout) from None
        except BaseException:
            self._thread_lock.release()
            raise
        depth.file_lock = file_lock
        depth.value = 1

    def __exit__(self, *exc_info: object) -> None:
        depth = self._depth
        depth.value -= 1
        if depth.value:
            return
        file_lock, depth.file_lock = depth.file_lock, None
        try:
            if file_lock is not None:
                file_lock.__exit__(None, None, None)
        finally:
            self._thread_lock.release()
