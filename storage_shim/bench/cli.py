"""``storage-shim bench``: the command line of the harness.

Kept light: the harness itself is imported when the command runs, so the
``storage-shim`` program starts as fast with the command as without.
"""

from __future__ import annotations

import argparse
from typing import Any


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    return parse


def add_bench_command(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure every backend against raw protocols, SQLite and other libraries",
        description="Measure every installed backend side by side with the hand-written"
        " protocols (truncate and write; temp file, fsync, replace, directory fsync; open, read,"
        " orjson.loads), SQLite in WAL mode, atomicwrites and TinyDB: writes, reads, update() from"
        " processes and transactions, in interleaved rounds whose median is kept; then list(),"
        " doctor, journal recovery, memory and import time at scale. Prints the table, the"
        " curves and each target of issue 7 met or missed. Takes a few minutes; --quick seconds.",
    )
    bench.add_argument(
        "--quick", action="store_true", help="a smoke run of seconds (figures not to quote)"
    )
    bench.add_argument(
        "--rounds",
        type=_positive(int),
        metavar="N",
        help="interleaved rounds per cell (default: 3)",
    )
    bench.add_argument(
        "--seconds",
        type=_positive(float),
        metavar="S",
        help="seconds per subject per round (default: 0.5)",
    )
    bench.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only what this regular expression finds in '<cell>/<subject>'"
        " (write/2KB/8t/fsync/journal) or in a scale part (scale/import, scale/documents,"
        " scale/recovery, scale/memory); repeat for several. Baselines come along.",
    )
    bench.add_argument(
        "--documents",
        type=_positive(int),
        metavar="N",
        help="documents of the scale figures; the curves take N/100, N/10 and N (default: 100000)",
    )
    bench.add_argument(
        "--recovery-mb",
        type=_positive(float),
        metavar="MB",
        help="journal log to recover; the curve also takes MB/16 and MB/4"
        " (default: 256; issue 7 asks for 1024)",
    )
    bench.add_argument(
        "--postgres", metavar="URI", help="a database for a backend serving postgresql://"
    )
    bench.add_argument(
        "--location",
        metavar="DIR",
        help="work in a new temporary directory inside DIR, removed afterwards"
        " (default: the system's temporary directory)",
    )
    bench.add_argument(
        "--json",
        metavar="PATH",
        help="also write the full results as JSON ('-': only JSON, on standard output)",
    )
    bench.add_argument("--markdown", metavar="PATH", help="also write the results as Markdown")
    bench.add_argument(
        "--update-doc",
        metavar="PATH",
        help="replace the results between the bench markers of PATH (docs/performance.md)",
    )
    bench.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar on standard error (default: when it is a terminal)",
    )
    bench.set_defaults(run=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from .command import run  # noqa: PLC0415  # the harness loads when the command runs

    return run(args)
