"""The worker processes of a torture run: one writer against readers, then updaters.

Workers are module-level functions run by :func:`storage_shim.testing.workers.run_in_processes`
in ``spawn``-ed processes; each opens its own store and reports a tally.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import storage_shim as ss

from ..testing.workers import START_TIMEOUT, WorkerError, run_in_processes, spawn_context
from .document import GOOD, TORN, classify_read, make_document
from .errors import TortureError

DOCUMENT_KEY = "torture/document"
COUNTER_KEY = "torture/counter"
UPDATE_TIMEOUT = 1.0
"""Seconds one ``update()`` may take on average before the updaters count as stuck."""

Watch = Callable[[float], None]
"""Told the fraction (0 to 1) of the running phase that is done."""


@dataclass(frozen=True)
class WriterTally:
    writes: int
    seconds: float
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReaderTally:
    reads: int
    torn: int
    seconds: float
    versions_seen: int
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdaterTally:
    acknowledged: int
    errors: dict[str, int] = field(default_factory=dict)


def rewrite(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    size: int,
    seconds: float,
    start: Barrier,
    stop: Event,
    done: Synchronized[float],
) -> WriterTally:
    """Write ever newer versions for ``seconds``, then set ``stop``; ``done`` tracks the time."""
    errors: Counter[str] = Counter()
    writes = version = 0
    with ss.open_store(location, backend=backend, **options) as store:
        try:
            start.wait(START_TIMEOUT)
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < seconds:
                done.value = elapsed / seconds
                version += 1
                try:
                    store.write(DOCUMENT_KEY, make_document(version, size))
                except ss.StorageError as exc:
                    errors[type(exc).__name__] += 1
                else:
                    writes += 1
        finally:
            stop.set()
    return WriterTally(writes, elapsed, dict(errors))


def read_until_stopped(
    location: str, backend: str, options: dict[str, Any], *, start: Barrier, stop: Event
) -> ReaderTally:
    """Read the document until ``stop`` is set, judging every read."""
    outcomes: Counter[str] = Counter()
    versions: set[int] = set()
    with ss.open_store(location, backend=backend, **options) as store:
        start.wait(START_TIMEOUT)
        began = time.monotonic()
        while not outcomes or not stop.is_set():
            outcome, version = classify_read(functools.partial(store.read, DOCUMENT_KEY))
            outcomes[outcome] += 1
            if version is not None:
                versions.add(version)
        seconds = time.monotonic() - began
    reads = sum(outcomes.values())
    torn = outcomes.pop(TORN, 0)
    outcomes.pop(GOOD, None)
    return ReaderTally(reads, torn, seconds, len(versions), dict(outcomes))


def _increment(value: int) -> int:
    return value + 1


def increment(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    times: int,
    start: Barrier,
    done: Synchronized[int],
) -> UpdaterTally:
    """``update()`` the counter ``times`` times; counts the updates that returned."""
    errors: Counter[str] = Counter()
    acknowledged = 0
    with ss.open_store(location, backend=backend, **options) as store:
        start.wait(START_TIMEOUT)
        for _ in range(times):
            try:
                store.update(COUNTER_KEY, _increment, default=0)
            except ss.StorageError as exc:
                errors[type(exc).__name__] += 1
            else:
                acknowledged += 1
            with done.get_lock():
                done.value += 1
    return UpdaterTally(acknowledged, dict(errors))


def watched(
    calls: list[functools.partial[Any]],
    watch: Watch,
    progress: Callable[[], float],
    timeout: float,
) -> list[Any]:
    """Run the calls in processes, telling ``watch`` how far they are every tenth of a second.

    Workers still running after ``timeout`` seconds are killed, and the run fails.
    """
    with concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="storage-shim-torture"
    ) as pool:
        running = pool.submit(run_in_processes, calls, timeout=timeout)
        while True:
            try:
                results: list[Any] = running.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                watch(min(progress(), 1.0))
            except WorkerError as exc:
                raise TortureError(f"a worker process failed:\n{exc}") from exc
            else:
                watch(1.0)
                return results


def race(
    location: str,
    backend: str,
    *,
    seconds: float,
    readers: int,
    size: int,
    durability: ss.Durability,
    watch: Watch,
) -> tuple[WriterTally, list[ReaderTally]]:
    """One process rewrites the document for ``seconds`` while ``readers`` processes read it.

    The readers make no read retries, so that no torn read hides behind one.
    """
    with ss.open_store(location, backend=backend) as store:
        store.write(DOCUMENT_KEY, make_document(0, size))
    ctx = spawn_context()
    start, stop, done = ctx.Barrier(readers + 1), ctx.Event(), ctx.Value("d", 0.0)
    write = functools.partial(
        rewrite,
        location,
        backend,
        {"durability": durability},
        size=size,
        seconds=seconds,
        start=start,
        stop=stop,
        done=done,
    )
    read = functools.partial(
        read_until_stopped, location, backend, {"read_retries": 0}, start=start, stop=stop
    )
    writer, *tallies = watched(
        [write] + [read] * readers,
        watch,
        lambda: float(done.value),
        timeout=seconds + 2 * START_TIMEOUT,
    )
    return writer, tallies


def race_updates(
    location: str,
    backend: str,
    *,
    updaters: int,
    updates: int,
    durability: ss.Durability,
    watch: Watch,
) -> tuple[list[UpdaterTally], int]:
    """``updaters`` processes each ``update()`` one counter ``updates`` times.

    Returns their tallies and the counter's final value.
    """
    ctx = spawn_context()
    start, done = ctx.Barrier(updaters), ctx.Value("q", 0)
    call = functools.partial(
        increment,
        location,
        backend,
        {"durability": durability},
        times=updates,
        start=start,
        done=done,
    )
    total = updaters * updates
    tallies = watched(
        [call] * updaters,
        watch,
        lambda: done.value / total,
        timeout=2 * START_TIMEOUT + total * UPDATE_TIMEOUT,
    )
    with ss.open_store(location, backend=backend, read_retries=0) as store:
        final = store.get(COUNTER_KEY, 0)
    if type(final) is not int:
        raise TortureError(f"{backend}: the counter ended as {final!r}, not an integer")
    return tallies, final
