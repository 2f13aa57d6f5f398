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
    __slots__ = ("done", "error", "item", "taken")

    def __init__(self, item: T) -> None:
        self.item = item
        self.taken = False
        """A leader has put it in its batch: only that leader may remove it now."""
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
            try:
                while not ticket.done and self._queue[0] is not ticket:
                    self._cond.wait()
            except BaseException:  # interrupted while queued: leave no ticket nobody leads
                if not ticket.taken:
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                raise
        if ticket.done:
            if ticket.error is not None:
                raise ticket.error
            return
        self._lead(ticket)

    def _lead(self, ticket: _Ticket[T]) -> None:
        batch: list[_Ticket[T]] = []
        error: BaseException | None = None
        try:
            with self._lock:
                with self._cond:
                    batch = self._queue[: self._max_batch]
                    for member in batch:
                        member.taken = True
                self._run([member.item for member in batch])
        except BaseException as exc:
            error = exc
            raise
        finally:
            with self._cond:
                finished = batch or [ticket]
                for member in finished:
                    member.error = error
                    member.done = True
                done = {id(member) for member in finished}
                self._queue[:] = [t for t in self._queue if id(t) not in done]
                self._cond.notify_all()
