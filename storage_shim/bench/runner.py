"""``run_bench``: every selected cell in interleaved rounds, then the scale figures."""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib.metadata
import os
import platform
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .. import __version__
from .baselines import SQLITE_FULL, SQLITE_NORMAL
from .catalog import all_subjects
from .processes import Workers
from .results import CellResult, Report, Row
from .scale import Findings, Step, documents, import_and_open, peak_memory, recovery
from .subjects import (
    RAW_READ,
    RAW_REPLACE,
    BackendSubject,
    Options,
    Prepared,
    Subject,
)
from .targets import check_cells, references
from .timing import Sample, quiesce, rotations, run_for, time_call
from .workloads import LARGE, SMALL, Cell, grid

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Settings:
    rounds: int = 3
    seconds: float = 0.5
    only: tuple[str, ...] = ()
    """Regular expressions searched in ``<cell id>/<subject>`` and in the scale parts' ids."""
    location: str | None = None
    options: Options = field(default_factory=Options)
    documents: tuple[int, ...] = (1_000, 10_000, 100_000)
    recovery_mb: tuple[float, ...] = (16, 64, 256)
    import_runs: int = 10
    sizes: tuple[int, ...] = (SMALL, LARGE)


QUICK = Settings(
    rounds=3,
    seconds=0.03,
    documents=(100, 1_000),
    recovery_mb=(2, 8),
    import_runs=3,
    sizes=(SMALL,),
)
"""A smoke run of seconds: figures not to quote."""


def baseline_of(cell: Cell) -> str:
    if cell.workload == "write":
        return RAW_REPLACE
    if cell.workload == "read":
        return RAW_READ
    return SQLITE_FULL if cell.durability == "fsync" else SQLITE_NORMAL


def _matches(only: tuple[str, ...], text: str) -> bool:
    return not only or any(re.search(pattern, text) for pattern in only)


def plan(
    subjects: list[Subject], only: tuple[str, ...], sizes: tuple[int, ...] = (SMALL, LARGE)
) -> list[tuple[Cell, list[Subject]]]:
    """The selected cells, each with its subjects, its baseline and its targets' references."""
    chosen = []
    for cell in grid(sizes):
        runnable = [s for s in subjects if s.supports(cell)]
        picked = {s.name for s in runnable if _matches(only, f"{cell.id}/{s.name}")}
        if not picked:
            continue
        picked |= {baseline_of(cell)} | references(cell.id, picked)
        chosen.append((cell, [s for s in runnable if s.name in picked]))
    return chosen


def machine(location: str) -> dict[str, object]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in load] if load else None,
        "file_system": file_system(location),
        "storage_shim": __version__,
        "sqlite": sqlite3.sqlite_version,
        "versions": {
            n: version(n) for n in ("orjson", "filelock", "pluggy", "atomicwrites", "tinydb")
        },
    }


def file_system(path: str) -> str | None:
    """The type of the file system holding ``path`` (Linux: from /proc/mounts)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            table = [line.split()[1:3] for line in mounts]
    except OSError:
        return None
    real = os.path.realpath(path)
    best = max(
        (m for m in table if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
        key=lambda m: len(m[0]),
        default=None,
    )
    return best[1] if best else None


def _step(tracker: _Tracker, weight: float, what: str) -> None:
    tracker.step(what, weight)


class _Tracker:
    def __init__(self, total: float, progress: Progress | None) -> None:
        self.total, self.done, self.progress = max(total, 1e-9), 0.0, progress

    def step(self, what: str, weight: float) -> None:
        if self.progress:
            self.progress(what, min(self.done / self.total, 1.0))
        self.done += weight


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text)


class _CellRun:
    """One cell: its subjects prepared, measured round after round, then released."""

    def __init__(
        self, cell: Cell, subjects: list[Subject], root: str, workers: Workers | None
    ) -> None:
        self.cell, self.workers = cell, workers
        self.directory = os.path.join(root, _slug(cell.id))
        self.result = CellResult(cell, baseline_of(cell), [Row(s.name, s.kind) for s in subjects])
        self.rows = {row.subject: row for row in self.result.rows}
        self.ready: dict[str, Prepared] = {}
        self.attached: set[str] = set()
        for subject in subjects:
            why = subject.missing()
            if why:
                self.rows[subject.name].note = why
                continue
            with self._failing(subject.name):
                self._prepare(subject)

    @contextlib.contextmanager
    def _failing(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            self.rows[name].note = f"failed: {type(exc).__name__}: {exc}"[:300]
            self.rows[name].samples.clear()
            self._release(name)

    def _prepare(self, subject: Subject) -> None:
        directory = os.path.join(self.directory, _slug(subject.name))
        self.ready[subject.name] = subject.prepare(self.cell, directory)
        if self.workers is not None:
            self.workers.attach(subject.name, self.cell, directory)
            self.attached.add(subject.name)

    def _release(self, name: str) -> None:
        if name in self.attached and self.workers is not None:
            self.attached.discard(name)
            with contextlib.suppress(Exception):
                self.workers.detach(name, self.cell)
        prepared = self.ready.pop(name, None)
        if prepared is not None:
            with contextlib.suppress(Exception):
                prepared.close()

    def measure(self, name: str, seconds: float) -> None:
        if name not in self.ready:
            return
        with self._failing(name):
            prepared = self.ready[name]
            if self.workers is not None:
                sample = self.workers.run(name, self.cell, seconds)
            else:
                operations = [prepared.operation(w) for w in range(self.cell.parallel)]
                sample = run_for(seconds, operations)
            settled, _ = time_call(prepared.settle)
            self.rows[name].samples.append(Sample(sample.ops, sample.seconds + settled))
        quiesce()

    def finish(self) -> CellResult:
        for name in list(self.ready):
            if name in self.attached and self.workers is not None:
                with self._failing(name):
                    self.workers.detach(name, self.cell)
                self.attached.discard(name)
            if self.cell.workload == "update" and name in self.ready:
                self._check_counter(name, self.ready[name])
            self._release(name)
        shutil.rmtree(self.directory, ignore_errors=True)
        return self.result

    def _check_counter(self, name: str, prepared: Prepared) -> None:
        with contextlib.suppress(Exception):
            final = prepared.counter()
            done = sum(s.ops for s in self.rows[name].samples)
            if final is not None and final != done:
                self.result.notes.append(
                    f"{name}: the counter reads {final} after {done} acknowledged update()s"
                    + (" (lost updates)" if final < done else "")
                )


def run_bench(settings: Settings, progress: Progress | None = None) -> Report:
    scratch = tempfile.mkdtemp(prefix="storage-shim-bench-", dir=settings.location)
    try:
        return _run(settings, scratch, progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(settings: Settings, root: str, progress: Progress | None) -> Report:
    subjects = all_subjects(settings.options)
    cells = plan(subjects, settings.only, settings.sizes)
    scale = {p: part for p, part in _scale_parts(settings).items() if _matches(settings.only, p)}
    total = sum(settings.rounds * len(s) * (settings.seconds + 0.05) for _, s in cells)
    tracker = _Tracker(total + sum(part.weight for part in scale.values()), progress)
    report = Report(machine(root), _settings_json(settings, subjects))
    processes = max((cell.parallel for cell, _ in cells if cell.processes), default=0)
    workers = Workers(processes, settings.options) if processes else None
    try:
        for cell, chosen in cells:
            run = _CellRun(cell, chosen, root, workers if cell.processes else None)
            try:
                for order in rotations(list(run.ready), settings.rounds):
                    for name in order:
                        tracker.step(f"{cell.id} {name}", settings.seconds + 0.05)
                        run.measure(name, settings.seconds)
            finally:
                report.cells.append(run.finish())
    finally:
        if workers is not None:
            workers.close()
    report.verdicts = check_cells(report.cells)
    for name, part in scale.items():
        directory = os.path.join(root, name.replace("/", "-"))
        weight = part.weight / part.steps
        figures, curves, verdicts = part.run(directory, functools.partial(_step, tracker, weight))
        shutil.rmtree(directory, ignore_errors=True)
        report.figures += figures
        report.curves += curves
        report.verdicts += verdicts
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report.machine["load_average_after"] = [round(x, 2) for x in load] if load else None
    return report


@dataclass(frozen=True)
class _ScalePart:
    weight: float
    """Rough seconds, for the progress bar."""
    steps: int
    run: Callable[[str, Step], Findings]


def _scale_parts(settings: Settings) -> dict[str, _ScalePart]:
    sizes, points = settings.recovery_mb, settings.documents
    return {
        "scale/import": _ScalePart(
            0.4 * settings.import_runs,
            1,
            lambda root, step: import_and_open(root, settings.import_runs, step),
        ),
        "scale/documents": _ScalePart(
            1.5e-4 * points[-1],
            len(points) + 2,
            lambda root, step: documents(root, points, settings.rounds, step),
        ),
        "scale/recovery": _ScalePart(
            sum(sizes) / 40, len(sizes), lambda root, step: recovery(root, sizes, step)
        ),
        "scale/memory": _ScalePart(0.5, 1, peak_memory),
    }


def _settings_json(settings: Settings, subjects: list[Subject]) -> dict[str, object]:
    described = {s.name: s.description for s in subjects}
    return {
        "rounds": settings.rounds,
        "seconds": settings.seconds,
        "only": list(settings.only),
        "documents": list(settings.documents),
        "recovery_mb": list(settings.recovery_mb),
        "import_runs": settings.import_runs,
        "sizes": list(settings.sizes),
        "postgres": settings.options.postgres is not None,
        "subjects": described,
        "backends": [s.name for s in subjects if isinstance(s, BackendSubject)],
    }
