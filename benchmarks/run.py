"""``storage-shim bench`` from a checkout: every backend against raw protocols and SQLite.

    PYTHONPATH=. python benchmarks/run.py [--quick] [--only PATTERN] [--json PATH] ...

The harness lives in ``storage_shim.bench``; ``--help`` lists its options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from storage_shim.bench.cli import add_bench_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py")
    add_bench_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # the harness spawns processes that import this file again
    raise SystemExit(main())
