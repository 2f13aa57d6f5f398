"""Durable 2 KB writes per second from one thread: the sqlite backend against atomic.

Both run with ``durability="fsync"``: atomic writes a temporary file, flushes it,
renames it and flushes the directory; sqlite commits one transaction whose WAL
frames are flushed (``synchronous=FULL``). The rounds are interleaved and the
median of each is reported with the ratio, which says more than the absolute
figures on a shared machine. Every write carries a new counter: SQLite skips
rewriting pages whose bytes do not change, so rewriting identical documents
would measure commits with nothing to flush.

    python benchmarks/durable_writes.py [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import storage_shim as ss

DOCUMENT = {"messages": [{"role": "user", "text": "x" * 100, "n": i} for i in range(15)]}
BACKENDS = ("atomic", "sqlite")


def writes_per_second(backend: str, location: Path, seconds: float) -> float:
    with ss.open_store(location, backend=backend, durability="fsync") as store:
        assert store.write("bench/warm-up", DOCUMENT).durable
        count, began = 0, time.perf_counter()
        deadline = began + seconds
        while time.perf_counter() < deadline:
            store.write(("bench", str(count % 100)), {**DOCUMENT, "count": count})
            count += 1
        elapsed = time.perf_counter() - began
    shutil.rmtree(location)
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--location", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ss-sqlite-bench-", dir=args.location))
    rates: dict[str, list[float]] = {name: [] for name in BACKENDS}
    try:
        for round_number in range(args.rounds):
            for name in BACKENDS:
                location = root / f"{name}-{round_number}"
                rates[name].append(writes_per_second(name, location, args.seconds))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"durable 2 KB writes, 1 thread, median of {args.rounds} interleaved rounds")
    print(f"{'backend':<10}{'writes/s':>10}{'vs atomic':>11}   rounds")
    for name, rate in medians.items():
        rounds = " ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:<10}{rate:>10.0f}{rate / medians['atomic']:>10.2f}x   {rounds}")


if __name__ == "__main__":
    main()
