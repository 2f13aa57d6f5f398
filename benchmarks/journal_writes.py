"""Durable 2 KB writes per second: journal against atomic and SQLite WAL synchronous=FULL.

Now one slice of the bench harness (``storage-shim bench``): the cells
``write/2KB/1t/fsync`` and ``write/2KB/8t/fsync`` with those three subjects,
in interleaved rounds, with the targets they decide.

    PYTHONPATH=. python benchmarks/journal_writes.py [--seconds 2] [--rounds 5] [--threads 1 8]
"""

from __future__ import annotations

import argparse

from run import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8], choices=[1, 8])
    args = parser.parse_args()
    threads = "|".join(map(str, args.threads))
    only = f"^write/2KB/({threads})t/fsync/(journal|atomic|sqlite3:wal-full)$"
    raise SystemExit(
        main(["--only", only, "--rounds", str(args.rounds), "--seconds", str(args.seconds)])
    )
