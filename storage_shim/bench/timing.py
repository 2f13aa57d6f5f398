"""How every figure is taken: operations run for a fixed time, in interleaved rounds.

Each round runs every contender of a cell once, in an order that rotates from
round to round, so a slow minute of a shared machine (another process's
flush, the kernel writing back dirty pages) lands on all of them rather than
on one; the figure kept is the median of the rounds.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
Operation = Callable[[], object]


@dataclass(frozen=True)
class Sample:
    """``ops`` operations completed in ``seconds`` of wall time."""

    ops: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def median_rate(samples: Sequence[Sample]) -> float:
    return statistics.median(s.rate for s in samples) if samples else 0.0


def run_for(seconds: float, operations: Sequence[Operation]) -> Sample:
    """Call each operation over and over, each in its own thread, until ``seconds`` passed.

    One operation runs in the calling thread. Every operation completes at
    least once; the elapsed time runs until the last one returned.
    """
    if len(operations) == 1:
        return _run_alone(seconds, operations[0])
    counts = [0] * len(operations)
    finished = [0.0] * len(operations)
    errors: list[BaseException] = []
    window = [0.0, 0.0]

    def open_window() -> None:
        window[0] = time.perf_counter()
        window[1] = window[0] + seconds

    start = threading.Barrier(len(operations), action=open_window)

    def work(index: int) -> None:
        operation = operations[index]
        n = 0
        try:
            start.wait()
            deadline = window[1]
            while True:
                operation()
                n += 1
                if time.perf_counter() >= deadline:
                    break
        except BaseException as exc:
            errors.append(exc)
            start.abort()
        counts[index], finished[index] = n, time.perf_counter()

    pool = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(operations))]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    if real or errors:
        raise (real or errors)[0]
    return Sample(sum(counts), max(finished) - window[0])


def _run_alone(seconds: float, operation: Operation) -> Sample:
    n = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        operation()
        n += 1
        now = time.perf_counter()
        if now >= deadline:
            return Sample(n, now - began)


def rotations(items: Sequence[T], rounds: int) -> list[list[T]]:
    """The order of each round: ``items`` rotated by one more place each round."""
    n = len(items)
    return [[items[(r + i) % n] for i in range(n)] for r in range(rounds)] if n else []


def quiesce() -> None:
    """Write back dirty pages between measurements, so none pays for the previous one's."""
    if hasattr(os, "sync"):
        os.sync()


def time_call(function: Callable[[], T]) -> tuple[float, T]:
    """Seconds taken by one call, and its result."""
    began = time.perf_counter()
    result = function()
    return time.perf_counter() - began, result
