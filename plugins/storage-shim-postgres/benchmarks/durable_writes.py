"""Durable 2 KB writes per second: postgres (a throw-away local server) against atomic (files).

    python benchmarks/durable_writes.py [--seconds 1.0] [--rounds 3]

Both stores use ``durability="fsync"`` and live on the same file system (the
system's temporary directory). Rounds interleave the backends, so a noisy
neighbour on a shared machine hits both alike; each figure is the median of
the rounds, and the ratios are what to quote.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import storage_shim as ss

from storage_shim_postgres.testing import running_server

DOCUMENT = {"payload": "x" * 2000, "n": 0}
THREAD_COUNTS = (1, 8)


def writes_per_second(store: ss.Store, threads: int, seconds: float) -> float:
    start = threading.Barrier(threads)

    def work(thread: int) -> int:
        start.wait()
        deadline, count = time.perf_counter() + seconds, 0
        while time.perf_counter() < deadline:
            store.write(f"bench/t{thread}/doc{count % 50}", {**DOCUMENT, "n": count})
            count += 1
        return count

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(work, range(threads)))
    return total / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, int], list[float]] = {}
    with running_server() as server, tempfile.TemporaryDirectory() as directory:
        stores = {
            "postgres": ss.open_store(server.uri(), pool_max_size=10),
            "atomic": ss.open_store(directory, backend="atomic"),
        }
        try:
            for _ in range(args.rounds):
                for name, store in stores.items():
                    for threads in THREAD_COUNTS:
                        rate = writes_per_second(store, threads, args.seconds)
                        results.setdefault((name, threads), []).append(rate)
        finally:
            for store in stores.values():
                store.close()
    print(f"durable 2 KB writes/s, median of {args.rounds} interleaved rounds of {args.seconds}s")
    for threads in THREAD_COUNTS:
        postgres = statistics.median(results["postgres", threads])
        atomic = statistics.median(results["atomic", threads])
        print(
            f"{threads} thread(s): postgres {postgres:8,.0f}   atomic {atomic:8,.0f}"
            f"   postgres/atomic {postgres / atomic:.2f}"
        )


if __name__ == "__main__":
    main()
