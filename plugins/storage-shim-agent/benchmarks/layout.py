"""The measurements behind the agent plugin's routing table.

Part 1 writes each kind of document of an agent server alone, the way the
server does, with each candidate backend: wall time and flushes per write.
Part 2 runs the kinds at once (four sessions streaming parts, one session's
diff rewritten, messages created and completed) under candidate routing
tables, and reports each kind's write latency.

    PYTHONPATH=.:plugins/storage-shim-agent python plugins/storage-shim-agent/benchmarks/layout.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import storage_shim_agent
from storage_shim_agent import plugin

import storage_shim as ss

BACKENDS = ("atomic", "journal", "lockfile")
TABLES: Mapping[str, Mapping[str, str]] = {
    "all atomic (no plugin)": {},
    "diff, part, message -> journal": {
        "session_diff": "journal",
        "part": "journal",
        "message": "journal",
    },
    "part, message, session -> journal": {
        "part": "journal",
        "message": "journal",
        "session": "journal",
    },
    "part, message -> journal (plugin default)": {"part": "journal", "message": "journal"},
}
Latencies = dict[str, list[float]]


class CountingFS(ss.FileSystem):
    """Counts flushes and written bytes; every call still goes to the real file system."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.written = 0
        self._guard = threading.Lock()

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        with self._guard:
            self.fsyncs += 1
        super().fsync(fd, full=full, data_only=data_only)

    def write(self, fd: int, data: memoryview) -> int:
        written = super().write(fd, data)
        with self._guard:
            self.written += written
        return written

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        written = super().pwrite(fd, data, offset)
        with self._guard:
            self.written += written
        return written


def timed(latencies: Latencies, kind: str, call: Callable[[], object]) -> None:
    started = time.perf_counter()
    call()
    latencies.setdefault(kind, []).append(time.perf_counter() - started)


def diff_document(round_: int) -> list[dict[str, Any]]:
    """~256 KiB: 60 files with their text before and after."""
    return [
        {"file": f"src/module_{i}.py", "before": "b" * 2000, "after": f"{round_}:{i}" * 400}
        for i in range(60)
    ]


def rewrite_diff(store: ss.Store, rounds: int, latencies: Latencies) -> None:
    for i in range(rounds):
        document = diff_document(i)
        timed(latencies, "session_diff", partial(store.write, "session_diff/ses_0", document))


def stream_parts(store: ss.Store, session: int, rounds: int, latencies: Latencies) -> None:
    text = ""
    for i in range(rounds):
        text += f"token{i} "
        key = f"part/msg_{session}/prt_{i // 25}"
        value = {"type": "text", "text": text[-4000:]}
        timed(latencies, "part", partial(store.write, key, value))


def complete(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "time": {"completed": 1}}


def complete_messages(store: ss.Store, rounds: int, latencies: Latencies) -> None:
    for i in range(rounds):
        key = f"message/ses_0/msg_{i:04}"
        timed(latencies, "message", partial(store.write, key, {"role": "assistant"}))
        timed(latencies, "message", partial(store.update, key, complete))


def touch_session(store: ss.Store, rounds: int, latencies: Latencies) -> None:
    store.write("session/prj/ses_0", {"title": "t", "updated": 0})
    for _ in range(rounds):
        timed(
            latencies,
            "session",
            lambda: store.update("session/prj/ses_0", lambda s: {**s, "updated": s["updated"] + 1}),
        )


def alone(backend: str, kind: str, rounds: int) -> tuple[float, float, float]:
    """Milliseconds and flushes per write, bytes written per document byte, for ``kind`` alone.

    The plugin routes nothing here (an empty table); it only counts the writes.
    """
    latencies: Latencies = {}
    storage_shim_agent.configure(storage_shim_agent.AgentSettings(routes={}))
    try:
        with tempfile.TemporaryDirectory() as root:
            fs = CountingFS()
            store = ss.open_store(root, backend=backend, fs=fs, plugins=[plugin])
            fs.fsyncs = fs.written = 0
            if kind == "session_diff":
                rewrite_diff(store, rounds // 4, latencies)
            elif kind == "part":
                stream_parts(store, 0, rounds, latencies)
            elif kind == "message":
                complete_messages(store, rounds // 2, latencies)
            else:
                touch_session(store, rounds, latencies)
            written = storage_shim_agent.stats(store)[kind]
            store.close()  # publishing and checkpointing are part of the cost
    finally:
        storage_shim_agent.configure(None)
    mean_ms = statistics.mean(latencies[kind]) * 1e3
    return mean_ms, fs.fsyncs / written.count, fs.written / written.bytes


def together(table: Mapping[str, str], rounds: int) -> Latencies:
    """Every kind at once, in a store routed by ``table``."""
    storage_shim_agent.configure(storage_shim_agent.AgentSettings(routes=table))
    latencies: Latencies = {}
    try:
        with tempfile.TemporaryDirectory() as root, ss.open_store(root, plugins=[plugin]) as store:
            work = [
                threading.Thread(target=rewrite_diff, args=(store, rounds // 4, latencies)),
                threading.Thread(target=complete_messages, args=(store, rounds // 2, latencies)),
                threading.Thread(target=touch_session, args=(store, rounds // 4, latencies)),
                *(
                    threading.Thread(target=stream_parts, args=(store, s, rounds, latencies))
                    for s in range(4)
                ),
            ]
            for thread in work:
                thread.start()
            for thread in work:
                thread.join()
    finally:
        storage_shim_agent.configure(None)
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--part", choices=["alone", "together", "both"], default="both")
    args = parser.parse_args()
    kinds = ("session_diff", "part", "message", "session")

    if args.part != "together":
        print_alone(args.rounds, args.repeat, kinds)
    if args.part != "alone":
        print_together(args.rounds, args.repeat, kinds)


def print_alone(rounds: int, repeat: int, kinds: tuple[str, ...]) -> None:
    print("alone: ms per write / flushes per write / bytes written per document byte")
    print(f"(median of {repeat} interleaved runs; a store's close counts in flushes and bytes)")
    print(f"{'':14}" + "".join(f"{b:>22}" for b in BACKENDS))
    for kind in kinds:
        runs: dict[str, list[tuple[float, float, float]]] = {b: [] for b in BACKENDS}
        for _ in range(repeat):
            for backend in BACKENDS:
                runs[backend].append(alone(backend, kind, rounds))
        cells = [
            " / ".join(f"{statistics.median(r[i] for r in runs[backend]):.2f}" for i in range(3))
            for backend in BACKENDS
        ]
        print(f"{kind:14}" + "".join(f"{c:>22}" for c in cells))


def print_together(rounds: int, repeat: int, kinds: tuple[str, ...]) -> None:
    print(f"\ntogether: ms per write, p50 / p99 (medians of {repeat} interleaved runs)")
    print(f"{'':44}" + "".join(f"{k:>16}" for k in kinds))
    runs: dict[str, list[Latencies]] = {name: [] for name in TABLES}
    for _ in range(repeat):
        for name, table in TABLES.items():
            runs[name].append(together(table, rounds))
    for name in TABLES:
        cells = []
        for kind in kinds:
            p50 = statistics.median(percentile(r[kind], 0.5) for r in runs[name]) * 1e3
            p99 = statistics.median(percentile(r[kind], 0.99) for r in runs[name]) * 1e3
            cells.append(f"{p50:6.2f} / {p99:6.1f}")
        print(f"{name:44}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
