"""One subject of one bench cell, alone, for long enough to profile.

    PYTHONPATH=. py-spy record --format raw -o /tmp/atomic.txt -- \\
        python benchmarks/profile_subject.py write/2KB/1t/fsync atomic --seconds 10
    python benchmarks/profile_subject.py --summary /tmp/atomic.txt

Threaded cells only (``update`` runs in worker processes: profile one of them
with ``py-spy record --subprocesses``). ``--summary`` prints the functions with
the most samples on the stack (inclusive) and at its top (self).
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile

from storage_shim.bench.catalog import all_subjects
from storage_shim.bench.subjects import Options
from storage_shim.bench.timing import run_for
from storage_shim.bench.workloads import grid


def profile(cell_id: str, subject_name: str, seconds: float) -> None:
    cell = next(c for c in grid() if c.id == cell_id)
    subject = next(s for s in all_subjects(Options()) if s.name == subject_name)
    with tempfile.TemporaryDirectory(prefix="storage-shim-profile-") as root:
        prepared = subject.prepare(cell, os.path.join(root, "subject"))
        try:
            sample = run_for(seconds, [prepared.operation(w) for w in range(cell.parallel)])
            prepared.settle()
        finally:
            prepared.close()
    print(f"{cell_id} {subject_name}: {sample.rate:,.0f} ops/s over {sample.seconds:.1f} s")


def summarize(path: str, top: int) -> None:
    """py-spy's raw format: one line per stack, ``frame;frame;frame count``."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8") as file:
        for line in file:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            n = int(count)
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title} (of {total} samples)")
        for frame, n in counter.most_common(top):
            print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cell", nargs="?", help="a cell id: write/2KB/1t/fsync")
    parser.add_argument("subject", nargs="?", help="a subject: atomic, journal, raw:temp-replace")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--summary", metavar="RAW", help="summarise a py-spy raw profile instead")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if args.summary:
        summarize(args.summary, args.top)
    else:
        profile(args.cell, args.subject, args.seconds)
