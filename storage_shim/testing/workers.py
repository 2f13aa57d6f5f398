"""The conformance suite's worker processes, and the runner that starts them.

Workers are module-level functions so that a ``spawn`` child can import them;
``spawn`` rather than ``fork`` because forking a process that runs threads
(pytest plugins, the test itself) is unsafe and warns from Python 3.12 on.
Each worker opens its own store from ``(location, backend, options)``. The
options cross a process boundary, so they must pickle: a backend that a test
registers with ``plugins=[...]`` objects is not known in the workers. Install
it through the ``storage_shim`` entry-point group to test it across processes.
"""

from __future__ import annotations

import functools
import multiprocessing
import pickle
import queue
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import storage_shim as ss

Call = Callable[[], Any]

START_TIMEOUT = 60.0
"""How long a worker waits for the others to be ready before giving up."""


class WorkerError(AssertionError):
    """A worker raised, died, or did not finish; the message holds what it reported."""


def spawn_context() -> SpawnContext:
    return multiprocessing.get_context("spawn")


def picklable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The store options a worker can receive: not ``plugins``, nor values that do not pickle."""
    sendable = {}
    for name, value in options.items():
        if name == "plugins":
            continue
        try:
            pickle.dumps(value)
        except Exception:  # noqa: S112  # an unpicklable option simply stays behind
            continue
        sendable[name] = value
    return sendable


def _report(results: multiprocessing.Queue[tuple[int, bool, Any]], index: int, call: Call) -> None:
    try:
        outcome = (index, True, call())
    except BaseException:
        outcome = (index, False, traceback.format_exc())
    results.put(outcome)


def _collect(
    results: multiprocessing.Queue[tuple[int, bool, Any]],
    processes: Sequence[BaseProcess],
    deadline: float,
) -> tuple[dict[int, Any], dict[int, str]]:
    values: dict[int, Any] = {}
    failures: dict[int, str] = {}
    pending = set(range(len(processes)))
    while pending:
        try:
            index, ok, value = results.get(timeout=0.2)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise WorkerError("workers still running at the deadline") from None
            silent = {i for i in pending if processes[i].exitcode is not None}
            if not silent:
                continue
            try:  # a worker that exited normally has flushed its result already
                index, ok, value = results.get(timeout=1.0)
            except queue.Empty:
                for i in silent:
                    failures[i] = f"exited with code {processes[i].exitcode} and no result"
                pending -= silent
                continue
        pending.discard(index)
        (values if ok else failures)[index] = value
    return values, failures


def run_in_processes(calls: Sequence[Call], *, timeout: float = 120.0) -> list[Any]:
    """Run each call in its own spawned process; return their results in order.

    A call is a :func:`functools.partial` of a worker, so it pickles by name.
    Raises :class:`WorkerError` with the worker's traceback when one raises or
    dies, and kills every worker still running after ``timeout`` seconds.
    Synchronisation objects in the calls must come from :func:`spawn_context`.
    """
    ctx = spawn_context()
    results: multiprocessing.Queue[tuple[int, bool, Any]] = ctx.Queue()
    processes = [
        ctx.Process(
            target=_report,
            args=(results, index, call),
            name=f"storage-shim-{getattr(call, 'func', call).__name__}-{index}",
            daemon=True,
        )
        for index, call in enumerate(calls)
    ]
    try:
        for process in processes:
            process.start()
        values, failures = _collect(results, processes, time.monotonic() + timeout)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        results.close()
        results.join_thread()
    if failures:
        raise WorkerError(
            "\n".join(f"{processes[i].name}: {text}" for i, text in sorted(failures.items()))
        )
    return [values[index] for index in range(len(processes))]


def _increment(value: int) -> int:
    return value + 1


def update_counter(
    location: str, backend: str, options: dict[str, Any], *, key: str, times: int, start: Barrier
) -> list[int]:
    """``update()`` the counter ``times`` times; returns the value each update produced."""
    with ss.open_store(location, backend=backend, **options) as store:
        start.wait(START_TIMEOUT)
        return [store.update(key, _increment, default=0) for _ in range(times)]


def versioned_document(version: int, size: int) -> dict[str, Any]:
    """About ``size`` bytes of JSON in which every part names ``version``."""
    return {"version": version, "blob": f"{version:08d}" * (size // 8), "tail": version}


def document_version(document: Any, size: int) -> int | None:
    """The version of an intact :func:`versioned_document`, or None for anything else."""
    if not isinstance(document, dict) or set(document) != {"version", "blob", "tail"}:
        return None
    version = document["version"]
    if type(version) is not int or document["tail"] != version:
        return None
    return version if document["blob"] == f"{version:08d}" * (size // 8) else None


def rewrite_document(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    key: str,
    size: int,
    seconds: float,
    start: Barrier,
    stop: Event,
) -> int:
    """Write new versions of the document until ``seconds`` pass or ``stop`` is set.

    Sets ``stop`` when done, so that the readers finish too; returns the last version.
    """
    with ss.open_store(location, backend=backend, **options) as store:
        version = 0
        try:
            start.wait(START_TIMEOUT)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not stop.is_set():
                version += 1
                store.write(key, versioned_document(version, size))
        finally:
            stop.set()
        return version


@dataclass(frozen=True)
class ReadTally:
    reads: int
    torn: int
    versions_seen: int
    first_problem: str | None


def read_document(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    key: str,
    size: int,
    start: Barrier,
    stop: Event,
    stop_when_torn: bool,
) -> ReadTally:
    """Read the document until ``stop`` is set, counting reads that were not an intact version.

    A missing document counts as torn: the writer never removes it.
    """
    with ss.open_store(location, backend=backend, **options) as store:
        start.wait(START_TIMEOUT)
        reads = torn = 0
        seen: set[int] = set()
        first_problem: str | None = None
        while reads == 0 or not stop.is_set():
            reads += 1
            try:
                version = document_version(store.read(key), size)
                problem = "valid JSON that is not one version of the document"
            except (ss.CorruptDocumentError, ss.NotFoundError) as exc:
                version, problem = None, f"{type(exc).__name__}: {exc}"[:300]
            if version is not None:
                seen.add(version)
                continue
            torn += 1
            first_problem = first_problem or problem
            if stop_when_torn:
                stop.set()
        return ReadTally(reads, torn, len(seen), first_problem)


def race_readers_against_a_writer(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    key: str,
    size: int,
    seconds: float,
    readers: int = 2,
    stop_when_torn: bool = False,
) -> tuple[int, list[ReadTally]]:
    """Rewrite a document in one process for ``seconds`` while other processes read it.

    The writer skips fsync, to rewrite as often as it can; the readers make
    no retries, so that no torn read hides behind one. Returns the last
    version written and each reader's tally.
    """
    with ss.open_store(location, backend=backend, **options) as store:
        store.write(key, versioned_document(0, size))
    ctx = spawn_context()
    start, stop = ctx.Barrier(readers + 1), ctx.Event()
    write = functools.partial(
        rewrite_document,
        location,
        backend,
        {"durability": "none", **options},
        key=key,
        size=size,
        seconds=seconds,
        start=start,
        stop=stop,
    )
    read = functools.partial(
        read_document,
        location,
        backend,
        {**options, "read_retries": 0},
        key=key,
        size=size,
        start=start,
        stop=stop,
        stop_when_torn=stop_when_torn,
    )
    last, *tallies = run_in_processes([write] + [read] * readers)
    return last, tallies


def hold_lock(
    location: str, backend: str, options: dict[str, Any], *, key: str, held: Event, seconds: float
) -> None:
    """Take the backend's lock of ``key``, set ``held``, and keep the lock for ``seconds``."""
    with (
        ss.open_store(location, backend=backend, **options) as store,
        store.backend(backend).lock(ss.parse_key(key)),
    ):
        held.set()
        time.sleep(seconds)


ACCOUNTS = ("accounts/a", "accounts/b", "accounts/c")
LEDGER = "accounts/ledger"
"""The ledger is the large document of each transfer, so some transactions span many blocks."""


def open_accounts(store: ss.Store, balance: int) -> None:
    with store.transaction() as tx:
        for key in ACCOUNTS:
            tx.write(key, {"balance": balance, "moves": 0})
        tx.write(LEDGER, {"transfers": 0, "pad": ""})


def transfer(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    times: int,
    seed: int,
    pad: int,
    start: Barrier,
) -> int:
    """Move one unit between two accounts ``times`` times, each move one transaction."""
    import random  # noqa: PLC0415  # only workers need it

    pick = random.Random(seed)  # noqa: S311  # a reproducible test workload
    with ss.open_store(location, backend=backend, **options) as store:
        start.wait(START_TIMEOUT)
        for _ in range(times):
            source, target = pick.sample(ACCOUNTS, 2)
            with store.transaction() as tx:
                tx.update(source, lambda a: {"balance": a["balance"] - 1, "moves": a["moves"] + 1})
                tx.update(target, lambda a: {"balance": a["balance"] + 1, "moves": a["moves"] + 1})
                count = tx.read(LEDGER)["transfers"] + 1
                tx.write(LEDGER, {"transfers": count, "pad": f"{count:08d}" * (pad // 8)})
        return times


def audit_problem(documents: Mapping[ss.Key, Any], total: int, pad: int) -> str | None:
    """What is inconsistent in one ``read_many`` of the accounts, or None."""
    if any(ss.parse_key(k) not in documents for k in (*ACCOUNTS, LEDGER)):
        return f"documents missing: {sorted(documents)}"
    accounts = [documents[ss.parse_key(k)] for k in ACCOUNTS]
    ledger = documents[ss.parse_key(LEDGER)]
    transfers = ledger["transfers"]
    if ledger["pad"] != f"{transfers:08d}" * (pad // 8) and transfers:
        return f"the ledger's body does not match its count {transfers}"
    balances = sum(a["balance"] for a in accounts)
    moves = sum(a["moves"] for a in accounts)
    if balances != total or moves != 2 * transfers:
        return (
            f"half a transaction: balances {balances} (want {total}),"
            f" moves {moves}, ledger {transfers}"
        )
    return None


def audit_accounts(
    location: str,
    backend: str,
    options: dict[str, Any],
    *,
    total: int,
    expected: int,
    pad: int,
    start: Barrier,
    seconds: float = 60.0,
) -> tuple[int, list[str]]:
    """``read_many`` the accounts until the ledger shows ``expected`` transfers.

    Returns the number of audits and every inconsistency seen.
    """
    keys = [*ACCOUNTS, LEDGER]
    problems: list[str] = []
    audits = 0
    with ss.open_store(location, backend=backend, **options) as store:
        start.wait(START_TIMEOUT)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            documents = store.read_many(keys)
            audits += 1
            problem = audit_problem(documents, total, pad)
            if problem is not None:
                problems.append(problem)
            if documents[ss.parse_key(LEDGER)]["transfers"] >= expected:
                break
    return audits, problems
