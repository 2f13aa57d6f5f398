"""What each step of a durable ``atomic`` write costs, alone: the overhead's breakdown.

    PYTHONPATH=. python benchmarks/write_steps.py [--rounds 5] [--seconds 0.5]

The steps without I/O run thousands of times; the protocols with fsync run in
interleaved rounds like the bench's cells. Compare ``atomic`` with
``raw + filelock`` and ``raw + flock``: the difference is the store and the
path checks; ``raw + filelock`` against ``raw`` is the lock.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import filelock
import orjson

import storage_shim as ss
from storage_shim import codec
from storage_shim.bench.subjects import _replace
from storage_shim.bench.workloads import SMALL, make_document


def per_call(function: Callable[[], object], seconds: float) -> float:
    """Microseconds per call, over about ``seconds``."""
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(100):
            function()
        n += 100
    return (time.perf_counter() - began) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    document = make_document(SMALL)
    with tempfile.TemporaryDirectory(prefix="storage-shim-steps-") as root:
        path = os.path.join(root, "raw", "doc.json")
        lock_path = os.path.join(root, "raw", "doc.lock")
        os.makedirs(os.path.dirname(path))
        reused = filelock.FileLock(lock_path, timeout=30, poll_interval=0.001)
        store = ss.open_store(os.path.join(root, "store"), backend="atomic")
        memory = ss.open_store(os.path.join(root, "memory"), backend="memory")

        def raw() -> None:
            _replace(path, orjson.dumps(document), True)

        def with_filelock() -> None:
            with reused:
                raw()

        def with_flock() -> None:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw()
            finally:
                os.close(fd)

        def new_filelock() -> None:
            with filelock.FileLock(lock_path, timeout=30, poll_interval=0.001):
                pass

        def reused_filelock() -> None:
            with reused:
                pass

        def flock() -> None:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.close(fd)

        protocols: dict[str, Callable[[], object]] = {
            "raw temp+fsync+replace+dir fsync": raw,
            "raw + filelock (one object)": with_filelock,
            "raw + flock": with_flock,
            "store.write, atomic": lambda: store.write(("doc",), document),
        }
        steps: dict[str, Callable[[], object]] = {
            "filelock, new object each time": new_filelock,
            "filelock, one object": reused_filelock,
            "open + flock + close": flock,
            "lstat": lambda: os.lstat(path),
            "codec.encode 2 KB": lambda: codec.encode(document),
            "orjson.dumps 2 KB": lambda: orjson.dumps(document),
            "store.write, memory backend": lambda: memory.write(("doc",), document),
        }
        timings: dict[str, list[float]] = {name: [] for name in protocols}
        for _ in range(args.rounds):
            for name, function in protocols.items():
                timings[name].append(_timed(function, args.seconds))
        print(f"durable 2 KB writes, median of {args.rounds} interleaved rounds")
        base = statistics.median(timings["raw temp+fsync+replace+dir fsync"])
        for name, values in timings.items():
            median = statistics.median(values)
            print(f"  {name:<36} {median:8.0f} µs  {median / base:5.2f}x")
        print("steps without I/O")
        for name, step in steps.items():
            print(f"  {name:<36} {per_call(step, args.seconds):8.1f} µs")
        store.close()
        memory.close()


def _timed(function: Callable[[], object], seconds: float) -> float:
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        function()
        n += 1
    return (time.perf_counter() - began) / n * 1e6


if __name__ == "__main__":
    main()
