"""Durable single-document writes per second: journal against atomic and SQLite.

Each thread rewrites its own 2 KB document as fast as it can for ``--seconds``;
rounds of every contender are interleaved and the median of the rounds is
reported with its ratio to the atomic backend measured in the same run.
SQLite runs in WAL mode with ``synchronous=FULL``, one connection per thread,
one ``INSERT OR REPLACE`` transaction per write: the same durability as
``durability="fsync"``.

    python benchmarks/journal_writes.py [--seconds 2] [--rounds 5] [--threads 1 8]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

import storage_shim as ss

DOCUMENT = {"messages": [{"role": "user", "text": "x" * 100, "n": i} for i in range(15)]}
Writer = Callable[[int, int], None]


def run_threads(threads: int, seconds: float, make_writer: Callable[[], Writer]) -> float:
    """Writes per second of ``threads`` threads, each calling its writer until time is up."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def work(index: int) -> None:
        write = make_writer()
        start.wait()
        n = 0
        while not stop.is_set():
            write(index, n)
            n += 1
        counts[index] = n

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def store_contender(backend: str, root: Path) -> Callable[[int, float], float]:
    def measure(threads: int, seconds: float) -> float:
        location = root / f"{backend}-{threads}"
        with ss.open_store(location, backend=backend, durability="fsync") as store:
            rate = run_threads(
                threads, seconds, lambda: lambda i, n: store.write(("bench", str(i)), DOCUMENT)
            )
        shutil.rmtree(location)
        return rate

    return measure


def sqlite_contender(root: Path) -> Callable[[int, float], float]:
    def measure(threads: int, seconds: float) -> float:
        path = root / f"sqlite-{threads}.db"
        setup = sqlite3.connect(path)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE IF NOT EXISTS docs (key TEXT PRIMARY KEY, value BLOB)")
        setup.commit()
        setup.close()
        data = orjson.dumps(DOCUMENT)

        def make_writer() -> Writer:
            db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")

            def write(index: int, n: int) -> None:
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?)", (f"bench/{index}", data))
                db.execute("COMMIT")

            return write

        rate = run_threads(threads, seconds, make_writer)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return rate

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--location", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ss-bench-", dir=args.location))
    contenders = {
        "journal": store_contender("journal", root),
        "atomic": store_contender("atomic", root),
        "sqlite WAL FULL": sqlite_contender(root),
    }
    try:
        for threads in args.threads:
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, measure in contenders.items():
                    rates[name].append(measure(threads, args.seconds))
            medians = {name: statistics.median(values) for name, values in rates.items()}
            print(f"\n{threads} thread(s), durable 2 KB writes, median of {args.rounds} rounds")
            print(f"{'contender':<18}{'writes/s':>10}{'vs atomic':>11}{'vs sqlite':>11}")
            for name, rate in medians.items():
                print(
                    f"{name:<18}{rate:>10.0f}{rate / medians['atomic']:>10.2f}x"
                    f"{rate / medians['sqlite WAL FULL']:>10.2f}x"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
