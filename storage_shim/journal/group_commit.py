"""Group commit: concurrent committers share one write and one flush.

As in LevelDB's ``DBImpl::Write``, committers queue; the one at the head (the
leader) takes the writer lock, gathers everyone queued by then into one batch,
appends and flushes it once, then wakes the others with the batch's outcome.
Nobody is acknowledged before the flush that covers their record.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Ticket(Generic[T]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    def __init__(
        self,
        lock: contextlib.AbstractContextManager[None],
        run: Callable[[list[T]], object],
        max_batch: int = 1024,
    ) -> None:
        self._lock = lock
        self._run = run
        self._max_batch = max_batch
        self._queue: list[_Ticket[T]] = []
        self._cond = threading.Condition()

    def submit(self, item: T) -> None:
        """Return once ``item`` was committed in some batch; raise that batch's error."""
        ticket = _Ticket(item)
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done and self._queue[0] is not ticket:
                self._cond.wait()
        if ticket.done:
            if ticket.error is not None:
                raise ticket.error
            return
        batch: list[_Ticket[T]] = [ticket]
        error: BaseException | None = None
        try:
            with self._lock:
                with self._cond:
                    batch = self._queue[: self._max_batch]
                self._run([t.item for t in batch])
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self._cond:
                del self._queue[: len(batch)]
                for waiter in batch:
                    waiter.error = error
                    waiter.done = True
                self._cond.notify_all()
