"""The scale figures: many documents, a long journal, memory, import and open times."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .._types import Key
from ..store import Store, open_store
from .results import Curve, Figure, Verdict
from .subjects import RAW_READ
from .targets import ratio_verdict
from .timing import time_call
from .workloads import LARGE, SMALL, make_document

Step = Callable[[str], None]
"""Told what runs next; the runner advances its progress bar."""
Findings = tuple[list[Figure], list[Curve], list[Verdict]]
GROWTH_LIMIT = 3.0
"""Largest cost per item at the end of a curve over its cost at the start: linear is 1x."""
CURVE_BACKENDS = ("atomic", "journal")


def _median_seconds(function: Callable[[], object], runs: int) -> float:
    return statistics.median(time_call(function)[0] for _ in range(runs))


# -- import and open --------------------------------------------------------------------------
def _python(code: str, *args: str) -> tuple[float, str]:
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")]),
    }
    began = time.perf_counter()
    done = subprocess.run(  # noqa: S603  # this interpreter, our own code
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )
    return time.perf_counter() - began, done.stdout


_OPEN_CODE = """
import sys, time, json
began = time.perf_counter()
import storage_shim as ss
imported = time.perf_counter()
ss.open_store(sys.argv[1]).close()
print(json.dumps([imported - began, time.perf_counter() - imported]))
"""
_MODULES_CODE = """
import sys
before = set(sys.modules)
import orjson, filelock, pluggy
deps = set(sys.modules)
import storage_shim
extra = {m.split(".")[0] for m in set(sys.modules) - deps} - set(sys.stdlib_module_names)
print(" ".join(sorted(extra - {"storage_shim"})))
"""


def import_and_open(directory: str, runs: int, step: Step) -> Findings:
    """Interleaved subprocess runs: the library's import against its dependencies' own."""
    step("import time")
    os.makedirs(directory, exist_ok=True)
    codes = {
        "storage_shim": "import storage_shim",
        "deps": "import orjson, filelock, pluggy",
        "python": "pass",
    }
    walls: dict[str, list[float]] = {name: [] for name in [*codes, "open"]}
    opens: list[list[float]] = []
    for _ in range(runs):
        for name, code in codes.items():
            walls[name].append(_python(code)[0])
        wall, out = _python(_OPEN_CODE, directory)
        walls["open"].append(wall)
        opens.append(json.loads(out))
    ms = {name: statistics.median(values) * 1e3 for name, values in walls.items()}
    extra = _python(_MODULES_CODE)[1].split()
    imported = Figure(
        "scale/import",
        'python -c "import storage_shim"',
        ms["storage_shim"],
        "ms",
        reference=ms["deps"],
        reference_title='python -c "import orjson, filelock, pluggy"',
        detail={
            "python -c pass (ms)": round(ms["python"], 1),
            "third-party modules beyond the three": extra,
        },
    )
    first_open = statistics.median(o[1] for o in opens) * 1e3
    opened = Figure(
        "scale/open",
        "import storage_shim + open_store + close, fresh process",
        ms["open"],
        "ms",
        reference=ms["python"],
        reference_title="python -c pass",
        detail={"open_store + close alone (ms)": round(first_open, 2)},
    )
    warm = _median_seconds(lambda: open_store(directory).close(), max(runs, 5)) * 1e3
    again = Figure("scale/open-warm", "open_store + close, again in the same process", warm, "ms")
    verdict = ratio_verdict(
        "import storage_shim",
        "at most 1.50x the time of python -c 'import orjson, filelock, pluggy'",
        imported.ratio,
        1.5,
        at_most=True,
    )
    return [imported, opened, again], [], [verdict]


# -- many documents ------------------------------------------------------------------------------
def scale_key(i: int) -> Key:
    return (f"g{i % 100:02d}", f"d{i:07d}")


def bare_walk(root: str) -> int:
    """The floor of list(): os.scandir over the tree, counting the documents."""
    count, pending = 0, [root]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.name.endswith(".json"):
                    count += 1
    return count


def _fill(directory: str, start: int, stop: int, data: bytes) -> None:
    """Documents ``start`` to ``stop`` as plain files, the quickest way: the store reads them."""
    for i in range(start, stop):
        path = os.path.join(directory, *scale_key(i)) + ".json"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def documents(root: str, points: Sequence[int], rounds: int, step: Step) -> Findings:
    """At each of ``points`` documents, time each backend's writes, reads and list() per item.

    The store is filled with plain files up to the point, less a batch per
    backend; each backend then writes its batch of new documents through the
    store (a journal's checkpoint included, so its deferred fsyncs count).
    """
    data = orjson.dumps(make_document(SMALL))
    series: dict[str, dict[str, list[float]]] = {"write": {}, "read": {}, "list": {}}
    for by_backend in series.values():
        for backend in CURVE_BACKENDS:
            by_backend[backend] = []
    filled = 0
    for n in points:
        step(f"{n:,} documents")
        batch = max(1, min(1000, n // 10))
        first = n - batch * len(CURVE_BACKENDS)
        _fill(root, filled, first, data)
        for index, backend in enumerate(CURVE_BACKENDS):
            with open_store(root, backend=backend, durability="none") as store:
                start = first + index * batch
                costs = _costs(store, range(start, start + batch), rounds)
            for name, cost in costs.items():
                series[name][backend].append(cost)
        filled = n
    labels = [f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n) for n in points]
    curves = [
        Curve(
            f"curve/{name}",
            f"{name}() cost vs documents in the store",
            "documents",
            unit,
            labels,
            series[name],
        )
        for name, unit in (
            ("write", "µs per write"),
            ("read", "µs per read"),
            ("list", "µs per listed document"),
        )
    ]
    verdicts = [_growth(curve) for curve in curves]
    figures, listing_verdict = _listing(root, points[-1], rounds, step)
    figures.append(_doctor(root, points[-1], step))
    return figures, curves, [listing_verdict, *verdicts]


def _costs(store: Store, new: range, rounds: int) -> dict[str, float]:
    """Microseconds per write of the ``new`` documents, per read and per listed key.

    Documents ``0`` to ``new.stop`` exist once the new ones are written.
    """
    document = make_document(SMALL)
    began = time.perf_counter()
    for i in new:
        store.write(scale_key(i), document)
    store.checkpoint()
    write = (time.perf_counter() - began) / len(new)
    n = new.stop
    sample = random.Random(n).sample(range(n), min(n, 1000))  # noqa: S311  # not a secret
    began = time.perf_counter()
    for i in sample:
        store.read(scale_key(i))
    read = (time.perf_counter() - began) / len(sample)
    listing = _median_seconds(store.list, rounds) / n
    return {"write": write * 1e6, "read": read * 1e6, "list": listing * 1e6}


def _growth(curve: Curve) -> Verdict:
    worst = max(
        values[-1] / values[0] for values in curve.series.values() if values and values[0] > 0
    )
    return ratio_verdict(
        f"{curve.id.removeprefix('curve/')}: no quadratic growth",
        f"cost per item at {curve.points[-1]} at most {GROWTH_LIMIT:.0f}x"
        f" its cost at {curve.points[0]}",
        worst,
        GROWTH_LIMIT,
        at_most=True,
    )


def _listing(directory: str, n: int, rounds: int, step: Step) -> tuple[list[Figure], Verdict]:
    step(f"list() over {n:,} documents")
    listed, walked = [], []
    with open_store(directory, backend="atomic") as store:
        for _ in range(max(rounds, 3)):
            listed.append(time_call(store.list)[0])
            walked.append(time_call(lambda: bare_walk(directory))[0])
    figure = Figure(
        "scale/list",
        f"list() over {n:,} documents (atomic)",
        statistics.median(listed) * 1e3,
        "ms",
        reference=statistics.median(walked) * 1e3,
        reference_title="os.scandir walk",
    )
    verdict = ratio_verdict(
        f"list() over {n:,} documents",
        "at most 1.20x the time of an os.scandir walk",
        figure.ratio,
        1.2,
        at_most=True,
    )
    return [figure], verdict


def _doctor(directory: str, n: int, step: Step) -> Figure:
    step(f"doctor over {n:,} documents")
    title = f"doctor (diagnose) over {n:,} documents"
    try:
        from ..doctor import diagnose  # noqa: PLC0415  # written alongside the bench
    except ImportError:
        return Figure("scale/doctor", title, None, "s", note="pending: storage_shim.doctor missing")
    seconds, diagnosis = time_call(lambda: diagnose(directory))
    found = getattr(diagnosis, "documents", None)
    return Figure(
        "scale/doctor",
        title,
        seconds,
        "s",
        detail={"documents seen": found, "documents per second": round(n / seconds)},
    )


# -- the journal's recovery ------------------------------------------------------------------------
_FILL_DOCUMENT = 64_000


def fill_journal(directory: str, megabytes: float) -> None:
    """In a child process: commit ``megabytes`` of log, then die without a checkpoint."""
    document = make_document(_FILL_DOCUMENT)
    count = int(megabytes * 1e6 / len(orjson.dumps(document))) + 1
    store = open_store(
        directory,
        backend="journal",
        durability="none",
        checkpoint_bytes=1 << 62,
        publish_delay=3600.0,
    )
    for i in range(count):
        store.write(("doc", f"k{i % 16}"), document)
    os._exit(0)


def _log_bytes(directory: str) -> int:
    journal = os.path.join(directory, ".storage_shim", "journal")
    return sum(e.stat().st_size for e in os.scandir(journal) if e.name.endswith(".log"))


def recovery(
    root: str, sizes_mb: Sequence[float], step: Step
) -> tuple[list[Figure], list[Curve], list[Verdict]]:
    context = multiprocessing.get_context("spawn")
    seconds_per: list[float] = []
    rates: list[float] = []
    for megabytes in sizes_mb:
        step(f"journal recovery, {megabytes:g} MB of log")
        directory = os.path.join(root, f"journal-{megabytes:g}")
        child = context.Process(target=fill_journal, args=(directory, megabytes))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"the process filling the journal exited with {child.exitcode}")
        size = _log_bytes(directory)
        seconds, store = time_call(functools.partial(open_store, directory, backend="journal"))
        store.close()
        shutil.rmtree(directory, ignore_errors=True)
        seconds_per.append(seconds)
        rates.append(size / 1e6 / seconds)
    largest = sizes_mb[-1]
    figure = Figure(
        "scale/recovery",
        f"journal recovery (open_store) over a {largest:g} MB log",
        rates[-1],
        "MB/s",
        detail={
            "seconds": round(seconds_per[-1], 3),
            "log sizes (MB)": list(sizes_mb),
            "MB/s at each size": [round(r) for r in rates],
        },
    )
    labels = [f"{m:g} MB" for m in sizes_mb]
    curve = Curve(
        "curve/recovery",
        "journal recovery time vs log size",
        "log size",
        "seconds",
        labels,
        {"journal": seconds_per},
    )
    per_mb = Curve(
        "curve/recovery-per-mb",
        "",
        "",
        "",
        labels,
        {"journal": [s / m for s, m in zip(seconds_per, sizes_mb, strict=True)]},
    )
    growth = _growth(per_mb)
    growth.name = "journal recovery: no quadratic growth"
    growth.goal = f"seconds per MB at {labels[-1]} at most {GROWTH_LIMIT:.0f}x at {labels[0]}"
    verdict = Verdict(
        f"journal recovery over {largest:g} MB",
        "at least 200 MB/s of log",
        rates[-1],
        f"{rates[-1]:.0f} MB/s",
        rates[-1] >= 200,
    )
    return [figure], [curve], [verdict, growth]


# -- memory ---------------------------------------------------------------------------------------
def _peak(function: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def peak_memory(root: str, step: Step) -> Findings:
    step("peak memory of a 2.5 MB read")
    document = make_document(LARGE)
    data = orjson.dumps(document)
    figures = []
    for backend in ("atomic", "journal"):
        directory = os.path.join(root, f"memory-{backend}")
        with open_store(directory, backend=backend) as store:
            store.write(("doc",), document)
            store.checkpoint()
            path = os.path.join(directory, "doc.json")

            def raw(path: str = path) -> Any:
                with open(path, "rb") as file:
                    return orjson.loads(file.read())

            raw_peak = min(_peak(raw) for _ in range(3))
            store_peak = min(_peak(functools.partial(store.read, ("doc",))) for _ in range(3))
        figures.append(
            Figure(
                f"scale/memory-{backend}",
                f"peak memory of read() of 2.5 MB ({backend})",
                store_peak / 1e6,
                "MB",
                reference=raw_peak / 1e6,
                reference_title=RAW_READ,
                detail={"document bytes": len(data)},
            )
        )
    return figures, [], []
