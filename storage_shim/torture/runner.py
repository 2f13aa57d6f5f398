"""``run_torture``: the race of every backend, measured and checked against its promises."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from ..backend import BackendSpec, Capabilities, Durability
from ..errors import UnknownBackendError
from ..progress import Progress
from ..store import backend_specs
from .document import make_document
from .errors import TortureError
from .race import ReaderTally, UpdaterTally, Watch, WriterTally, race, race_updates

DEFAULT_SECONDS = 2.5
DEFAULT_READERS = 2
DEFAULT_SIZE = 1_500_000
DEFAULT_UPDATERS = 2
DEFAULT_UPDATES = 300

"""Told what runs now and the fraction (0 to 1) of the whole run that is done."""


def _merge(tallies: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for tally in tallies:
        total.update(tally)
    return dict(sorted(total.items()))


@dataclass(frozen=True)
class Result:
    """What one backend did under torture. ``capabilities`` is what it promised."""

    backend: str
    capabilities: Capabilities | None
    document_bytes: int
    seconds: float
    """How long the writer rewrote the document."""
    writes: int
    write_errors: dict[str, int]
    reads: int
    torn: int
    read_errors: dict[str, int]
    versions_seen: int
    """The most distinct intact versions one reader saw: the readers did race the writer."""
    reads_per_second: float
    """Of all readers together."""
    updaters: int
    updates: int
    """Increments attempted by all updaters together."""
    acknowledged: int
    """Increments whose ``update()`` returned."""
    final: int
    update_errors: dict[str, int]

    @classmethod
    def from_tallies(
        cls,
        spec: BackendSpec,
        *,
        size: int,
        writer: WriterTally,
        readers: list[ReaderTally],
        updaters: list[UpdaterTally],
        updates: int,
        final: int,
    ) -> Result:
        return cls(
            backend=spec.name,
            capabilities=spec.capabilities,
            document_bytes=len(orjson.dumps(make_document(1, size))),
            seconds=writer.seconds,
            writes=writer.writes,
            write_errors=writer.errors,
            reads=sum(r.reads for r in readers),
            torn=sum(r.torn for r in readers),
            read_errors=_merge(r.errors for r in readers),
            versions_seen=max((r.versions_seen for r in readers), default=0),
            reads_per_second=sum(r.reads / r.seconds for r in readers if r.seconds > 0),
            updaters=len(updaters),
            updates=updates * len(updaters),
            acknowledged=sum(u.acknowledged for u in updaters),
            final=final,
            update_errors=_merge(u.errors for u in updaters),
        )

    @property
    def writes_per_second(self) -> float:
        return self.writes / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        """Acknowledged increments missing from the final counter."""
        return self.acknowledged - self.final

    @property
    def errors(self) -> int:
        return (
            sum(self.read_errors.values())
            + sum(self.write_errors.values())
            + sum(self.update_errors.values())
        )

    @property
    def problems(self) -> tuple[str, ...]:
        """The promises of :attr:`capabilities` this run caught the backend breaking."""
        caps, found = self.capabilities, []
        if caps is None:
            return ()
        if caps.atomic_reads:
            if self.torn:
                found.append(
                    f"promises atomic reads, yet {self.torn} of {self.reads} reads were torn"
                )
            found += [f"a read raised {name} {n} time(s)" for name, n in self.read_errors.items()]
            found += [f"a write raised {name} {n} time(s)" for name, n in self.write_errors.items()]
        if caps.cross_process and self.updaters:
            if self.lost:
                found.append(
                    f"promises cross-process update(), yet {self.lost} of "
                    f"{self.acknowledged} acknowledged increments were lost"
                )
            found += [
                f"an update() raised {name} {n} time(s)" for name, n in self.update_errors.items()
            ]
        return tuple(found)


def select_backends(names: Iterable[str] | None = None) -> list[BackendSpec]:
    """The specs of ``names``, or of every installed backend whose documents are files.

    A backend that declares no capabilities runs only when named; one that is
    not persistent (its documents live in one process) cannot be raced at all.
    """
    specs = backend_specs()
    if names is None:
        return [s for s in specs.values() if s.capabilities and s.capabilities.persistent]
    chosen: list[BackendSpec] = []
    for name in dict.fromkeys(names):
        if name not in specs:
            raise UnknownBackendError(name, specs)
        spec = specs[name]
        if spec.capabilities is not None and not spec.capabilities.persistent:
            raise TortureError(
                f"backend {name!r} keeps its documents inside one process; "
                "there is nothing for other processes to race on"
            )
        chosen.append(spec)
    return chosen


def _check(seconds: float, readers: int, size: int, updaters: int, updates: int) -> None:
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, not {seconds!r}")
    if readers < 1 or size < 1 or updates < 1:
        raise ValueError("readers, size and updates must be at least 1")
    if updaters < 0:
        raise ValueError("updaters must not be negative")


def run_torture(
    backends: Iterable[str] | None = None,
    *,
    seconds: float = DEFAULT_SECONDS,
    readers: int = DEFAULT_READERS,
    size: int = DEFAULT_SIZE,
    location: str | os.PathLike[str] | None = None,
    updaters: int = DEFAULT_UPDATERS,
    updates: int = DEFAULT_UPDATES,
    durability: Durability = "none",
    progress: Progress | None = None,
) -> list[Result]:
    """Race each backend in processes and measure it; see :class:`Result`.

    Per backend: one process rewrites a self-validating document of about
    ``size`` bytes for ``seconds`` while ``readers`` processes read it; then
    ``updaters`` processes (none: skipped) each ``update()`` one counter
    ``updates`` times. The work happens in a new temporary directory, inside
    ``location`` when given, removed afterwards. ``durability`` is the writers';
    ``"none"`` rewrites fastest, giving a reader the most chances to tear.
    """
    _check(seconds, readers, size, updaters, updates)
    specs = select_backends(backends)
    if location is not None and not os.path.isdir(location):
        raise TortureError(f"no directory at {os.fspath(location)!r}")
    phases = _Phases(len(specs) * (2 if updaters else 1), progress)
    try:
        scratch = tempfile.TemporaryDirectory(
            prefix="storage-shim-torture-", dir=location, ignore_cleanup_errors=True
        )
    except OSError as exc:
        raise TortureError(f"cannot create a directory to work in: {exc}") from exc
    results = []
    with scratch as root:
        for spec in specs:
            directory = os.path.join(root, spec.name)
            writer, readings = race(
                directory,
                spec.name,
                seconds=seconds,
                readers=readers,
                size=size,
                durability=durability,
                watch=phases.next(f"{spec.name}: 1 writer, {readers} reader(s)"),
            )
            counted: tuple[list[UpdaterTally], int] = ([], 0)
            if updaters:
                counted = race_updates(
                    directory,
                    spec.name,
                    updaters=updaters,
                    updates=updates,
                    durability=durability,
                    watch=phases.next(f"{spec.name}: {updaters} updater(s)"),
                )
            tallies, final = counted
            results.append(
                Result.from_tallies(
                    spec,
                    size=size,
                    writer=writer,
                    readers=readings,
                    updaters=tallies,
                    updates=updates,
                    final=final,
                )
            )
    return results


class _Phases:
    """Turns each phase's own progress into the whole run's."""

    def __init__(self, count: int, progress: Progress | None) -> None:
        self.count = count
        self.started = 0
        self.progress = progress

    def next(self, what: str) -> Watch:
        done = self.started
        self.started += 1

        def watch(fraction: float) -> None:
            if self.progress is not None:
                self.progress(what, (done + fraction) / self.count)

        return watch
