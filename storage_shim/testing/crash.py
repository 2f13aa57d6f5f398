"""Crash-state enumeration: simulated power loss at every point of small workloads.

::

    from storage_shim.testing import check_crash_safety

    report = check_crash_safety("mine", plugins=[my_plugin])
    assert report.ok, report.summary()

The model, after three published harnesses:

* **Recording** (ALICE, Pillai et al., "All File Systems Are Not Created
  Equal", OSDI 2014, section 3). A workload runs against
  :class:`~storage_shim.testing.simfs.SimFS`, which logs every mutating
  operation and every fsync. The workload's calls mark what was acknowledged:
  a write that returned before the crash point.
* **Crash states** (ALICE's weak persistence model). For a crash after any
  prefix of the log, what an fsync (file data) or a directory fsync (its
  entries) covered survives; any subset of the other operations may survive,
  applied in order and never without an operation it needs (a rename without
  the creation of its source); and any one surviving unsynced write may be
  torn: a prefix of it, or its length filled with zeros (the size persisted
  before the data, as on XFS) or garbage (SQLite's ``test6.c`` garbles the
  sectors of unsynced writes). Up to :attr:`Limits.exhaustive_up_to` unsynced
  operations every subset is tried; beyond, targeted ones (none, all, each
  prefix, all but one, each alone) and seeded random ones. States are
  deduplicated by a hash of the tree.
* **Checking** (SQLite, "How SQLite Is Tested", sections 3.3-3.4; CrashMonkey,
  Mohan et al., OSDI 2018, which found almost every crash bug with three or
  fewer file operations right after a persistence point). Each state gets a
  fresh simulated file system; the store is opened, which runs the backend's
  own recovery, and must never raise; the documents must equal the state after
  some prefix of the commits that is at least every acknowledged one (so each
  document is one whole version, an acknowledged write is present or
  superseded, a transaction is all or nothing); opening again must change
  nothing; a crash during recovery must recover too (a sample of the states of
  recovery's own log); and the store must accept writes afterwards.

Workloads are sequences of :class:`Step`; each ``Step.op`` names a handler in
:data:`OPS`: ``write``, ``remove`` and ``update`` (one commit per key),
``reopen``, ``transaction`` (all its keys in one commit, for backends with
``capabilities.transactions``) and ``checkpoint`` (:meth:`Store.checkpoint`,
which folds a journal into the files). A plugin adds its own with
:func:`register_op`::

    @register_op("compact")
    def compact(session: Session, step: Step) -> Changes | None:
        session.store.backend("mine").compact()
        return None               # or {key: new value or ABSENT}: a commit

    check_crash_safety("mine", workloads=standard_workloads(
        2, extra=[Step("compact"), Step("transaction", ("a", "dir/b"))]))

The real ``os`` write and flush calls are refused while the backend runs (see
:func:`~storage_shim.testing.simfs.forbid_real_io`), and installed plugins are
looked up once per run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import itertools
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..backend import Durability, accepted_options
from ..backends.files import TEMP_MARKER
from ..errors import CorruptDocumentError, NotFoundError
from ..store import Store, backend_specs, open_store
from .simfs import Image, Record, SimFS, Sync, Write, flushed_by, forbid_real_io

ROOT = "/sim/store"
"""Where the simulated store lives; it exists, durably, before every workload."""
DEEP_VARIABLE = "STORAGE_SHIM_DEEP"


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT: Any = _Absent()
"""The value of a document that does not exist, in commits and in expectations."""


@dataclass(frozen=True)
class Unreadable:
    """What the checker found where a document could not be read."""

    reason: str


# -- workloads ------------------------------------------------------------------------
@dataclass(frozen=True)
class Doc:
    """A document of the workloads: its key, whether it exists before, its padding in bytes."""

    key: str
    initial: bool
    size: int


DOCS = (Doc("a", initial=True, size=4096), Doc("dir/b", initial=False, size=64))
"""A multi-KB document that exists and a small one, in a subdirectory, that does not."""
DOCS_3 = (*DOCS, Doc("c", initial=True, size=16))


@dataclass(frozen=True)
class Step:
    op: str
    keys: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join([self.op, *self.keys]) if self.keys else self.op


@dataclass(frozen=True)
class Workload:
    steps: tuple[Step, ...]
    docs: tuple[Doc, ...] = DOCS

    def __str__(self) -> str:
        return "[" + ", ".join(map(str, self.steps)) + "]"


Changes = Mapping[str, Any]
"""What one call committed: key to new value, :data:`ABSENT` for a removal."""


class Session:
    """What an op handler works with: the open store and fresh, recognisable values."""

    def __init__(self, opener: Callable[[], Store], docs: Sequence[Doc], version: int) -> None:
        self._opener = opener
        self.sizes = {doc.key: doc.size for doc in docs}
        self.version = version
        self.store = opener()

    def new_value(self, key: str, previous: Any = ABSENT) -> dict[str, Any]:
        """A value never written before: ``{"doc", "version", ["from",] "pad"}``."""
        self.version += 1
        value: dict[str, Any] = {"doc": key, "version": self.version}
        if previous is not ABSENT:
            value["from"] = previous.get("version") if isinstance(previous, dict) else None
        value["pad"] = "x" * self.sizes.get(key, 16)
        return value

    def reopen(self) -> None:
        self.store.close()
        self.store = self._opener()


OpHandler = Callable[[Session, Step], Changes | None]
OPS: dict[str, OpHandler] = {}
"""The workload operations by name; returning changes makes the call a commit."""


def register_op(name: str) -> Callable[[OpHandler], OpHandler]:
    def register(handler: OpHandler) -> OpHandler:
        OPS[name] = handler
        return handler

    return register


@register_op("write")
def _write(session: Session, step: Step) -> Changes:
    changes = {key: session.new_value(key) for key in step.keys}
    for key, value in changes.items():
        session.store.write(key, value)
    return changes


@register_op("remove")
def _remove(session: Session, step: Step) -> Changes:
    for key in step.keys:
        session.store.remove(key)
    return dict.fromkeys(step.keys, ABSENT)


@register_op("update")
def _update(session: Session, step: Step) -> Changes:
    changes = {}
    for key in step.keys:

        def change(current: Any, key: str = key) -> dict[str, Any]:
            return session.new_value(key, current)

        changes[key] = session.store.update(key, change, default=None)
    return changes


@register_op("reopen")
def _reopen(session: Session, step: Step) -> None:
    session.reopen()


@register_op("transaction")
def _transaction(session: Session, step: Step) -> Changes:
    """Writes every key of the step in one transaction: one commit, all or nothing."""
    changes = {key: session.new_value(key) for key in step.keys}
    with session.store.transaction() as tx:
        for key, value in changes.items():
            tx.write(key, value)
    return changes


@register_op("checkpoint")
def _checkpoint(session: Session, step: Step) -> None:
    session.store.checkpoint()


KEYED_OPS = ("write", "remove", "update")


def standard_workloads(
    max_steps: int = 3,
    docs: tuple[Doc, ...] = DOCS,
    keyed_ops: Sequence[str] = KEYED_OPS,
    plain_ops: Sequence[str] = ("reopen",),
    extra: Sequence[Step] = (),
) -> list[Workload]:
    """Every sequence of 1 to ``max_steps`` steps, each one of: a keyed op on one document, a
    plain op, or one of the ``extra`` steps (``Step("transaction", ("a", "dir/b"))``)."""
    choices = [Step(op, (doc.key,)) for op in keyed_ops for doc in docs]
    choices += [Step(op) for op in plain_ops]
    choices += extra
    return [
        Workload(steps, docs)
        for length in range(1, max_steps + 1)
        for steps in itertools.product(choices, repeat=length)
    ]


# -- the oracle -------------------------------------------------------------------------
@dataclass(frozen=True)
class Commit:
    """One acknowledged-or-not change: ``started``/``ended`` are log lengths around the call."""

    changes: Changes
    started: int
    ended: int
    label: str


@dataclass
class Oracle:
    """The documents before the workload and the commits, in order."""

    initial: dict[str, Any]
    commits: list[Commit] = field(default_factory=list)
    durable: bool = True

    def states(self) -> list[dict[str, Any]]:
        """The documents after each prefix of the commits (index 0: before any)."""
        current = dict(self.initial)
        result = [dict(current)]
        for commit in self.commits:
            for key, value in commit.changes.items():
                if value is ABSENT:
                    current.pop(key, None)
                else:
                    current[key] = value
            result.append(dict(current))
        return result

    def at(self, crash_point: int) -> Expectation:
        """What may be found after a crash once ``crash_point`` log records were issued."""
        acknowledged = sum(1 for c in self.commits if c.ended <= crash_point)
        started = sum(1 for c in self.commits if c.started < crash_point)
        low = acknowledged if self.durable else 0
        return Expectation(self.states(), low, max(low, started), self.commits)


@dataclass(frozen=True)
class Expectation:
    """Allowed: the documents after commits ``1..j`` for some ``low <= j <= high``.

    For a sequential workload this is each document's allowed versions plus
    two rules across documents: a commit of several documents (a transaction)
    is all or nothing, and what survives is a prefix of the commit order.
    """

    states: list[dict[str, Any]]
    low: int
    high: int
    commits: list[Commit]

    @property
    def candidates(self) -> list[dict[str, Any]]:
        return self.states[self.low : self.high + 1]

    @functools.cached_property
    def signature(self) -> bytes:
        return orjson.dumps(self.candidates, option=orjson.OPT_SORT_KEYS)

    def keys(self) -> list[str]:
        return sorted({key for state in self.states for key in state})

    def allowed(self, key: str) -> list[Any]:
        found: list[Any] = []
        for state in self.candidates:
            value = state.get(key, ABSENT)
            if value not in found:
                found.append(value)
        return found

    def problems(self, observed: Mapping[str, Any]) -> list[str]:
        if any(observed == state for state in self.candidates):
            return []
        found = []
        for key in sorted({*observed, *self.keys()}):
            value, allowed = observed.get(key, ABSENT), self.allowed(key)
            if value in allowed:
                continue
            expected = f"expected {' or '.join(map(show, allowed))}"
            if isinstance(value, Unreadable):
                found.append(f"{key} is unreadable ({value.reason}); {expected}")
                continue
            older = [j for j in range(self.low) if self.states[j].get(key, ABSENT) == value]
            if older:
                lost = self.commits[older[-1]].label if older[-1] < len(self.commits) else "?"
                found.append(
                    f"{key}: acknowledged write lost: found {show(value)} (from before "
                    f"'{lost}'); {expected}"
                )
            else:
                found.append(f"{key}: found {show(value)}, never written; {expected}")
        if not found:
            found.append(
                "each document is allowed but together they are not a prefix of the commits "
                f"(a torn transaction?): found {show_all(observed)}"
            )
        return found


def show(value: Any) -> str:
    if isinstance(value, dict) and "version" in value:
        return f"v{value['version']}"
    if isinstance(value, Unreadable):
        return "unreadable"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def show_all(documents: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {show(v)}" for k, v in sorted(documents.items())) + "}"


# -- crash states ---------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """How far the enumeration goes; :meth:`deep` for the ``STORAGE_SHIM_DEEP=1`` runs."""

    exhaustive_up_to: int = 10
    """Every subset of the unsynced operations up to this many of them."""
    random_subsets: int = 32
    """Beyond it: this many seeded random subsets, besides the targeted ones."""
    torn_writes: bool = True
    recovery_crash_states: int = 6
    """Crash states of each state's own recovery to check (a seeded sample)."""
    seed: int = 0

    @classmethod
    def deep(cls) -> Limits:
        return cls(exhaustive_up_to=12, random_subsets=256, recovery_crash_states=64)


@dataclass(frozen=True)
class Torn:
    """An unsynced write that persisted only partly: ``op`` replaces record ``index``."""

    index: int
    how: str
    op: Write


@dataclass(frozen=True)
class Choice:
    """One crash state: the records issued, those that persisted, and a torn write."""

    crash_point: int
    kept: frozenset[int]
    torn: Torn | None = None

    def describe(self, log: Sequence[Record]) -> str:
        lost = [
            log[i].label
            for i in range(self.crash_point)
            if i not in self.kept and not isinstance(log[i].op, Sync)
        ]
        where = f"after op {self.crash_point}/{len(log)}"
        if self.crash_point:
            where += f" ({log[self.crash_point - 1].label})"
        parts = [f"crash {where}"]
        if lost:
            parts.append("lost: " + "; ".join(lost))
        if self.torn:
            parts.append(f"torn: {log[self.torn.index].label} persisted {self.torn.how}")
        return _relative(", ".join(parts))


def _relative(text: str) -> str:
    return text.replace(ROOT + "/", "").replace(ROOT, ".")


def durable_records(records: Sequence[Record]) -> set[int]:
    """The records that an fsync issued later covers, with every record they need."""
    durable: set[int] = set()
    synced: set[int] = set()
    for record in reversed(records):
        op = record.op
        if isinstance(op, Sync):
            synced.add(op.ino)
        elif record.index in durable or flushed_by(op) <= synced:
            durable.add(record.index)
            durable.update(record.deps)
    return durable


def _closed(records: Sequence[Record], chosen: set[int]) -> frozenset[int]:
    """``chosen`` without the records whose prerequisites were not chosen."""
    kept: set[int] = set()
    for record in records:
        if record.index in chosen and record.deps <= kept:
            kept.add(record.index)
    return frozenset(kept)


def _subsets(optional: list[int], limits: Limits, rng: random.Random) -> Iterator[set[int]]:
    n = len(optional)
    if n <= limits.exhaustive_up_to:
        for mask in range(1 << n):
            yield {optional[i] for i in range(n) if mask >> i & 1}
        return
    yield set()
    yield set(optional)
    for i in range(1, n):
        yield set(optional[:i])
    for i in range(n):
        yield set(optional) - {optional[i]}
        yield {optional[i]}
    for _ in range(limits.random_subsets):
        yield {i for i in optional if rng.random() < 0.5}


def _garbled(record: Record, seed: int) -> Iterator[Torn]:
    op = record.op
    assert isinstance(op, Write)
    size = len(op.data)
    for keep in sorted({size // 2, size - 1}):
        if keep > 0:
            yield Torn(
                record.index,
                f"as its first {keep} of {size} bytes",
                Write(op.ino, op.offset, op.data[:keep]),
            )
    yield Torn(record.index, f"as {size} zero bytes", Write(op.ino, op.offset, bytes(size)))
    digest = hashlib.sha256(seed.to_bytes(8) + op.data).digest()
    noise = random.Random(digest).randbytes(size)  # noqa: S311  # repeatable garbage
    yield Torn(record.index, f"as {size} random bytes", Write(op.ino, op.offset, noise))
    half = size // 2
    if half:  # the first sectors reached the disk, the rest is garbage
        mixed = op.data[:half] + noise[half:]
        yield Torn(
            record.index,
            f"as its first {half} bytes, then {size - half} random bytes",
            Write(op.ino, op.offset, mixed),
        )


def crash_choices(
    log: Sequence[Record], crash_point: int, limits: Limits, rng: random.Random
) -> Iterator[Choice]:
    """The crash states after ``crash_point`` records, as choices (possibly repeated)."""
    records = log[:crash_point]
    durable = durable_records(records)
    optional = [r.index for r in records if not isinstance(r.op, Sync) and r.index not in durable]
    seen: set[frozenset[int]] = set()
    for subset in _subsets(optional, limits, rng):
        kept = _closed(records, durable | subset)
        if kept in seen:
            continue
        seen.add(kept)
        yield Choice(crash_point, kept)
        if not limits.torn_writes:
            continue
        for index in sorted(kept - durable):
            record = log[index]
            if isinstance(record.op, Write) and len(record.op.data) > 1:
                for torn in _garbled(record, limits.seed):
                    yield Choice(crash_point, kept, torn)


def replay(base: Image, log: Sequence[Record], choice: Choice) -> Image:
    """The tree a crash leaves: ``base`` with the kept records applied in order."""
    image = base.copy()
    torn = choice.torn
    for index in sorted(choice.kept):
        op = torn.op if torn is not None and torn.index == index else log[index].op
        op.apply(image)
    image.next_ino = max(image.next_ino, max(image.nodes) + 1)
    return image


# -- the report -------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    workload: str
    state: str
    problem: str

    def __str__(self) -> str:
        return f"{self.workload}: {self.state}:\n    {self.problem}"


@dataclass
class CrashReport:
    """The figures of one :func:`check_crash_safety` run and what it found."""

    backend: str
    durability: Durability
    workloads: int = 0
    operations: int = 0
    """Mutating operations and fsyncs recorded, over every workload."""
    crash_points: int = 0
    states_generated: int = 0
    """Crash states produced by the enumeration, duplicates included."""
    states_unique: int = 0
    """Distinct (tree, expectation) pairs, counted per workload."""
    states_checked: int = 0
    """States on which recovery ran (the rest were already checked in another workload)."""
    recovery_states_checked: int = 0
    """Crash states of recovery's own operations that were checked."""
    leftover_temp_states: int = 0
    """Checked states where recovery left a temporary file behind (not a violation)."""
    violation_count: int = 0
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.violation_count == 0

    def figures(self) -> str:
        return (
            f"{self.backend} ({self.durability}): {self.workloads} workloads, "
            f"{self.operations} ops, {self.crash_points} crash points, "
            f"{self.states_generated} states generated, {self.states_unique} unique, "
            f"{self.states_checked} checked, {self.recovery_states_checked} recovery crash "
            f"states, {self.leftover_temp_states} with temp files left, "
            f"{self.violation_count} violations, {self.seconds:.1f}s"
        )

    def summary(self, limit: int = 5) -> str:
        lines = [self.figures(), *map(str, self.violations[:limit])]
        if self.violation_count > limit:
            lines.append(f"... and {self.violation_count - limit} more")
        return "\n".join(lines)


# -- running and checking ---------------------------------------------------------------
@dataclass
class Recording:
    """A workload's run: the durable tree before it, its log, its commits, the tree after."""

    base: Image
    log: list[Record]
    oracle: Oracle
    final: Image
    failure: str | None = None


class _Harness:
    def __init__(
        self,
        backend: str,
        plugins: Sequence[object],
        durability: Durability,
        options: Mapping[str, Any],
        limits: Limits,
    ) -> None:
        self.backend = backend
        self.plugins = plugins
        self.durability: Durability = durability
        self.options = dict(options)
        self.limits = limits
        self.cache: dict[tuple[str, bytes], tuple[list[str], bool]] = {}
        self.report = CrashReport(backend, durability)

    def open(self, fs: SimFS) -> Store:
        return open_store(
            ROOT,
            backend=self.backend,
            durability=self.durability,
            plugins=self.plugins,
            read_retries=0,
            fs=fs,
            **self.options,
        )

    # -- recording ------------------------------------------------------------------
    def record(self, workload: Workload) -> Recording:
        sim = SimFS()
        sim.image.makedirs(ROOT)
        initial: dict[str, Any] = {}
        bypasses: list[str] = []
        oracle = Oracle(initial, durable=self.durability != "none")
        base, failure, phase = sim.image, None, "writing the initial documents"
        with _repeatable_names(), forbid_real_io(bypasses):
            try:
                setup = Session(lambda: self.open(sim), workload.docs, 0)
                with setup.store:
                    for doc in workload.docs:
                        if doc.initial:
                            initial[doc.key] = setup.new_value(doc.key)
                            setup.store.write(doc.key, initial[doc.key])
                sim.mark_durable()
                base, phase = sim.image.copy(), "the workload"
                session = Session(lambda: self.open(sim), workload.docs, setup.version)
                for step in workload.steps:
                    started = len(sim.log)
                    changes = OPS[step.op](session, step)
                    if changes is not None:
                        oracle.commits.append(Commit(changes, started, len(sim.log), str(step)))
                session.store.close()
            except Exception as exc:
                failure = f"{phase} raised {_error(exc)}"
        if bypasses:
            failure = f"the backend bypassed the file-system object: {bypasses[0]}"
        return Recording(base, list(sim.log), oracle, sim.image.copy(), failure)

    # -- enumerating ------------------------------------------------------------------
    def run(self, workload: Workload) -> None:
        recording = self.record(workload)
        report = self.report
        report.workloads += 1
        report.operations += len(recording.log)
        if recording.failure:  # its partial effects are no commit the oracle knows of
            self.violation(workload, "while recording", recording.failure)
            return
        log = recording.log
        rng = random.Random(f"{self.limits.seed}/{workload}")  # noqa: S311  # repeatable
        images: dict[tuple[frozenset[int], Torn | None], tuple[Image, str]] = {}
        done: set[tuple[str, bytes]] = set()
        for crash_point in range(len(log) + 1):
            report.crash_points += 1
            expectation = recording.oracle.at(crash_point)
            for choice in crash_choices(log, crash_point, self.limits, rng):
                report.states_generated += 1
                cached = images.get((choice.kept, choice.torn))
                if cached is None:
                    image = replay(recording.base, log, choice)
                    cached = images[(choice.kept, choice.torn)] = (image, image.digest())
                image, digest = cached
                if (digest, expectation.signature) in done:
                    continue
                done.add((digest, expectation.signature))
                report.states_unique += 1
                problems = self.check(image, digest, expectation, nested=False)
                if problems:
                    self.violation(workload, choice.describe(log), "; ".join(problems))

    def violation(self, workload: Workload, state: str, problem: str) -> None:
        self.report.violation_count += 1
        if len(self.report.violations) < 100:
            self.report.violations.append(Violation(str(workload), state, _relative(problem)))

    # -- checking ---------------------------------------------------------------------
    def check(
        self, image: Image, digest: str, expectation: Expectation, *, nested: bool
    ) -> list[str]:
        """The problems of one state, checked once per run (a full check serves a nested one)."""
        key = (digest, expectation.signature)
        cached = self.cache.get(key)
        if cached is None or (cached[1] and not nested):
            cached = self.cache[key] = (self._check(image, expectation, nested=nested), nested)
        return cached[0]

    def _check(self, image: Image, expectation: Expectation, *, nested: bool) -> list[str]:
        if nested:
            self.report.recovery_states_checked += 1
        else:
            self.report.states_checked += 1
        keys = expectation.keys()
        sim = SimFS(image)
        try:
            first = self.observe(sim, keys)
        except Exception as exc:
            return [f"opening (recovery) and reading raised {_error(exc)}"]
        problems = expectation.problems(first)
        if nested:  # the state a crashed recovery left: recovering from it is what counts
            return problems
        recovery_log, recovered = list(sim.log), sim.image.copy()
        if any(name.endswith(TEMP_MARKER) for name in recovered.files()):
            self.report.leftover_temp_states += 1
        try:
            second = self.observe(sim, keys)
        except Exception as exc:
            return [*problems, f"opening a second time raised {_error(exc)}"]
        if second != first:
            problems.append(
                f"a second opening read {show_all(second)}, the first {show_all(first)}"
            )
        elif sim.image.digest() != recovered.digest():
            problems.append("a second opening changed the files: " + _diff(recovered, sim.image))
        problems += self.crash_during_recovery(image, recovery_log, expectation)
        problems += self.accepts_writes(sim, keys)
        return problems

    def observe(self, sim: SimFS, keys: Iterable[str]) -> dict[str, Any]:
        """Open (recovering), read every document, list, close: the documents found."""
        bypasses: list[str] = []
        found: dict[str, Any] = {}
        with forbid_real_io(bypasses):
            try:
                with self.open(sim) as store:
                    listed = {"/".join(key) for key in store.list()}
                    for key in sorted({*keys, *listed}):
                        try:
                            found[key] = store.read(key)
                        except NotFoundError:
                            if key in listed:
                                found[key] = Unreadable("listed but not found")
                        except CorruptDocumentError as exc:
                            found[key] = Unreadable(exc.reason)
            finally:
                if bypasses:
                    raise AssertionError(f"bypassed the file-system object: {bypasses[0]}")
        for key in found.keys() - listed:
            if not isinstance(found[key], Unreadable):
                found[key] = Unreadable("readable but not listed")
        return found

    def crash_during_recovery(
        self, image: Image, log: Sequence[Record], expectation: Expectation
    ) -> list[str]:
        if not any(not isinstance(record.op, Sync) for record in log):
            return []
        rng = random.Random(f"{self.limits.seed}/recovery/{image.digest()}")  # noqa: S311
        choices = {
            (choice.kept, choice.torn): choice
            for point in range(1, len(log) + 1)
            for choice in crash_choices(log, point, self.limits, rng)
        }
        sample = list(choices.values())
        rng.shuffle(sample)
        for choice in sample[: self.limits.recovery_crash_states]:
            state = replay(image, log, choice)
            problems = self.check(state, state.digest(), expectation, nested=True)
            if problems:
                where = _relative(choice.describe(log))
                return [f"a crash during recovery ({where}) then: {'; '.join(problems)}"]
        return []

    def accepts_writes(self, sim: SimFS, keys: Sequence[str]) -> list[str]:  # noqa: PLR0911
        """Writes after recovery read back, and (durable modes) survive a power cut right away.

        The second part catches a backend that builds on what a crash left, such
        as a log appended after its torn tail: only the next crash shows it.
        """
        bypasses: list[str] = []
        probe = {key: {"probe": key} for key in [*keys, "probe/new"]}
        try:
            with forbid_real_io(bypasses), self.open(sim) as store:
                sim.mark_durable()
                base = sim.image.copy()
                for key, value in probe.items():
                    store.write(key, value)
                read_back = {key: store.read(key) for key in probe}
                log = list(sim.log)
                power_cut = replay(base, log, Choice(len(log), frozenset(durable_records(log))))
        except Exception as exc:
            return [f"writing after recovery raised {_error(exc)}"]
        if read_back != probe:
            return [f"writes after recovery read back as {read_back}"]
        if bypasses:
            return [f"bypassed the file-system object: {bypasses[0]}"]
        if self.durability == "none":
            return []
        try:
            survived = self.observe(SimFS(power_cut), probe)
        except Exception as exc:
            return [f"recovering from a crash after writes that followed recovery raised {exc!r}"]
        lost = sorted(key for key, value in probe.items() if survived.get(key) != value)
        if lost:
            return [f"writes acknowledged after recovery lost by the next crash: {lost}"]
        return []


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None:
        text += f" (from {type(cause).__name__}: {cause})"
    return text


def _diff(before: Image, after: Image) -> str:
    old, new = before.files(), after.files()
    changed = sorted(p for p in old.keys() | new.keys() if old.get(p) != new.get(p))
    return ", ".join(changed) or "(directories only)"


@contextlib.contextmanager
def _repeatable_names() -> Iterator[None]:
    """Temporary names from a counter while recording, so equal workload prefixes give equal
    trees and their states are checked once; recovery and checks keep real randomness."""
    real = os.urandom
    counter = itertools.count()

    def urandom(size: int) -> bytes:
        seed = f"storage_shim.crash/{next(counter)}".encode()
        return hashlib.shake_256(seed).digest(size)

    os.urandom = urandom
    try:
        yield
    finally:
        os.urandom = real


@contextlib.contextmanager
def _entry_points_once() -> Iterator[None]:
    real = importlib.metadata.entry_points
    cached: dict[str, Any] = {}

    def entry_points(**params: Any) -> Any:
        if set(params) != {"group"}:
            return real(**params)
        group = params["group"]
        if group not in cached:
            cached[group] = real(group=group)
        return cached[group]

    importlib.metadata.entry_points = entry_points
    try:
        yield
    finally:
        importlib.metadata.entry_points = real


def record_workload(
    backend: str,
    workload: Workload,
    *,
    plugins: Iterable[object] = (),
    durability: Durability = "fsync",
    **options: Any,
) -> Recording:
    """Run ``workload`` on a simulated file system and return what it logged, uncrashed."""
    harness = _Harness(backend, list(plugins), durability, options, Limits())
    with _entry_points_once():
        return harness.record(workload)


def deep() -> bool:
    """Whether ``STORAGE_SHIM_DEEP=1`` asks for the long enumeration."""
    return os.environ.get(DEEP_VARIABLE, "") not in {"", "0"}


def check_crash_safety(
    backend: str,
    *,
    workloads: Iterable[Workload] | None = None,
    plugins: Iterable[object] = (),
    durability: Durability = "fsync",
    limits: Limits | None = None,
    stop_after: int | None = None,
    **options: Any,
) -> CrashReport:
    """Crash ``backend`` at every point of ``workloads`` and check what recovery makes of it.

    ``workloads`` defaults to :func:`standard_workloads` (three steps over two
    documents); ``options`` go to :func:`~storage_shim.open_store`. The
    backend must do its file I/O through the ``fs`` option. ``stop_after``
    ends the run once that many violations were found.
    """
    plugins = list(plugins)
    spec = backend_specs(plugins).get(backend)
    if spec is None:
        raise ValueError(f"no backend {backend!r} is registered")
    if "fs" not in accepted_options(spec.factory, {"fs": None}):
        raise TypeError(f"backend {backend!r} takes no fs option: it cannot be crash-tested")
    chosen = standard_workloads() if workloads is None else list(workloads)
    unknown = sorted({step.op for w in chosen for step in w.steps} - set(OPS))
    if unknown:
        raise ValueError(f"unknown workload op(s) {', '.join(unknown)}; see register_op()")
    harness = _Harness(backend, plugins, durability, options, limits or Limits())
    started = time.perf_counter()
    with _entry_points_once():
        for workload in chosen:
            harness.run(workload)
            if stop_after is not None and harness.report.violation_count >= stop_after:
                break
    harness.report.seconds = time.perf_counter() - started
    return harness.report


__all__ = [
    "ABSENT",
    "DOCS",
    "DOCS_3",
    "OPS",
    "Changes",
    "Choice",
    "Commit",
    "CrashReport",
    "Doc",
    "Expectation",
    "Limits",
    "Oracle",
    "Recording",
    "Session",
    "Step",
    "Violation",
    "Workload",
    "check_crash_safety",
    "crash_choices",
    "deep",
    "durable_records",
    "record_workload",
    "register_op",
    "replay",
    "standard_workloads",
]
