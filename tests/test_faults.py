"""Failures of the operating system: typed errors, previous documents intact, nothing left over.

A :class:`FaultyFS` counts every primitive call of an operation and, when armed,
raises an ``OSError`` at the Nth call (of one primitive or of all), once or
from then on. For every crash-safe backend, every operation and every N the
caller gets a typed error with the ``OSError`` chained, each document reads
back as its previous version (or, only when the failure came after the commit
point, its new one), the next opening leaves no temporary file, and a failed
flush of the journal poisons it until the store is reopened. :class:`Mortal`
kills the process at a call instead; small tmpfs mounts give a real full disk.
The sweep that deletes dead writers' temporary files must never touch a user's."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

import storage_shim as ss
from storage_shim import codec
from storage_shim.backends.files import STATE_DIR, TEMP_MARKER, FileBackend
from storage_shim.fs import Entry, FileSystem

OLD: dict[str, Any] = {"version": "old", "items": list(range(20))}
NEW: dict[str, Any] = {"version": "new", "items": list(range(200)), "pad": "x" * 2000}
CRASH_SAFE = ["lockfile", "atomic"]


def seed(root: Path, backend: str, previous: dict[str, Any] | None) -> None:
    with ss.open_store(root, backend=backend) as store:
        if previous is not None:
            store.write("doc", previous)


def stored(root: Path, backend: str) -> dict[str, Any] | None:
    """The document as a fresh store (which runs the backend's recovery) reads it."""
    with ss.open_store(root, backend=backend) as store:
        document: dict[str, Any] | None = store.get("doc")
        return document


def on_disk(root: Path, name: str = "doc") -> Any:
    try:
        data = (root / f"{name}.json").read_bytes()
    except FileNotFoundError:
        return None
    return codec.decode(data)


def temporary_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{TEMP_MARKER}"))


def leftovers(root: Path) -> list[str]:
    """Temporary files and backups anywhere below ``root``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and (p.name.endswith(TEMP_MARKER) or "backup" in p.parts)
    )


@pytest.fixture
def entry_points_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each opening scans the installed packages' entry points; hundreds of openings need not."""
    real = importlib.metadata.entry_points
    cached: dict[str, Any] = {}

    def entry_points(**params: Any) -> Any:
        if set(params) != {"group"}:
            return real(**params)
        if params["group"] not in cached:
            cached[params["group"]] = real(**params)
        return cached[params["group"]]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


# -- a file system that fails at a chosen call ----------------------------------------
Call = tuple[str, str]
"""A primitive and its target, relative to the store, with temporary names' random part masked."""
Fault = Callable[[str], OSError]
_RANDOM_PART = re.compile(r"\.[0-9a-f]{16}(?=(?:\.[a-z]+)?" + re.escape(TEMP_MARKER) + "$)")


class WindowsPermissionError(PermissionError):
    winerror: int


def os_error(code: int) -> Fault:
    return lambda path: OSError(code, os.strerror(code), path)


def access_denied_by_windows(path: str) -> OSError:
    """What ``os.replace`` raises on Windows while another program has the file open."""
    error = WindowsPermissionError(errno.EACCES, "Access is denied", path)
    error.winerror = 5
    return error


class _CountedLock(contextlib.AbstractContextManager[None]):
    """Counts (and may fail) each acquisition, not the creation of the lock object."""

    def __init__(
        self, fs: FaultyFS, path: str, inner: contextlib.AbstractContextManager[None]
    ) -> None:
        self.fs, self.path, self.inner = fs, path, inner

    def __enter__(self) -> None:
        self.fs.step("lock", self.path)
        self.inner.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self.inner.__exit__(*exc_info)


class FaultyFS(FileSystem):
    """Logs every primitive call; when armed, raises ``fault`` at call ``at``.

    ``at`` counts the calls of ``primitive`` only, or all calls when it is None.
    Once, only that call fails; persistent, every later one (of that primitive,
    or of all: a full disk, a dead device) fails too. A failed call has no
    effect, except that ``close`` releases the descriptor first, as POSIX does.
    ``fsync`` and ``fsync_dir`` are logged but flush nothing: these tests are
    about errors, not power loss, and hundreds of real flushes would be slow.
    """

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.fd_paths: dict[int, str] = {}
        self._guard = threading.Lock()
        self.arm(None)

    def arm(
        self,
        fault: Fault | None,
        at: int = 0,
        *,
        primitive: str | None = None,
        persistent: bool = False,
    ) -> None:
        """Start a new log, failing as described (``fault`` None: never)."""
        with self._guard:
            self.fault, self.at, self.primitive, self.persistent = fault, at, primitive, persistent
            self.calls: list[Call] = []
            self.counts: Counter[str] = Counter()
            self.injected: list[OSError] = []
            self.first_failure: int | None = None
            """Where the first injected failure is in :attr:`calls`."""

    def heal(self) -> None:
        self.fault = None

    def relative(self, path: str) -> str:
        name = os.path.relpath(path, self.root) if os.path.isabs(path) else path
        return _RANDOM_PART.sub(".<random>", name)

    def step(self, primitive: str, path: str, detail: str = "") -> None:
        with self._guard:
            index = len(self.calls)
            self.calls.append((primitive, self.relative(path) + detail))
            nth = index if self.primitive is None else self.counts[primitive]
            self.counts[primitive] += 1
            if self.fault is None or self.primitive not in (None, primitive):
                return
            if nth != self.at and not (self.persistent and nth > self.at):
                return
            error = self.fault(path)
            self.injected.append(error)
            if self.first_failure is None:
                self.first_failure = index
        raise error

    def _fd(self, fd: int) -> str:
        return self.fd_paths.get(fd, f"<fd {fd}>")

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        self.step("open", path)
        fd = super().open(path, flags, mode)
        self.fd_paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        path = self._fd(fd)
        self.fd_paths.pop(fd, None)
        super().close(fd)
        self.step("close", path)

    def write(self, fd: int, data: memoryview) -> int:
        self.step("write", self._fd(fd))
        return super().write(fd, data)

    def read(self, fd: int, size: int) -> bytes:
        self.step("read", self._fd(fd))
        return super().read(fd, size)

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        self.step("pwrite", self._fd(fd), " (zeros)" if not bytes(data).strip(b"\0") else "")
        return super().pwrite(fd, data, offset)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self.step("pread", self._fd(fd))
        return super().pread(fd, size, offset)

    def fstat(self, fd: int) -> os.stat_result:
        self.step("fstat", self._fd(fd))
        return super().fstat(fd)

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        self.step("fsync", self._fd(fd))

    def ftruncate(self, fd: int, length: int) -> None:
        self.step("ftruncate", self._fd(fd))
        super().ftruncate(fd, length)

    def chmod(self, path: str, mode: int) -> None:
        self.step("chmod", path)
        super().chmod(path, mode)

    def fsync_dir(self, path: str, *, full: bool = False) -> bool:
        self.step("fsync_dir", path)
        os.close(os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))  # it must exist
        return True

    def replace(self, src: str, dst: str) -> None:
        self.step("replace", dst)
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self.step("unlink", path)
        super().unlink(path)

    def mkdir(self, path: str) -> None:
        self.step("mkdir", path)
        super().mkdir(path)

    def lstat(self, path: str) -> os.stat_result:
        self.step("lstat", path)
        return super().lstat(path)

    def lock(self, path: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        return _CountedLock(self, path, super().lock(path, timeout))

    def scandir(self, path: str) -> Iterator[Entry]:
        self.step("scandir", path)
        return super().scandir(path)


# -- the operations under test ----------------------------------------------------------
Documents = dict[str, Any]
"""Values by key; None where no document exists."""


def bump(document: dict[str, Any]) -> dict[str, Any]:
    return {**document, "version": "updated", "pad": "u" * 2000}


def write_doc(store: ss.Store) -> object:
    return store.write("doc", NEW)


def update_doc(store: ss.Store) -> object:
    return store.update("doc", bump)


def transaction(store: ss.Store) -> object:
    with store.transaction() as tx:
        tx.update("tx/a", bump)
        tx.write("tx/b", NEW)
        tx.remove("tx/c")
    return tx.receipts


def checkpoint(store: ss.Store) -> object:
    store.checkpoint()
    return None


def log_three_changes(store: ss.Store) -> None:
    store.write("cp/a", NEW)
    store.remove("cp/b")
    store.write("cp/c", NEW)


@dataclass(frozen=True)
class Operation:
    run: Callable[[ss.Store], object]
    seeded: Documents
    after: Documents
    prepare: Callable[[ss.Store], None] = lambda store: None
    """Run on the faulty store before it is armed; ``before`` is the state it leaves."""
    prepared: Documents = field(default_factory=dict)

    @property
    def before(self) -> Documents:
        return {**self.seeded, **self.prepared}


LOGGED = {"cp/a": NEW, "cp/b": None, "cp/c": NEW}
OPERATIONS = {
    "write": Operation(write_doc, {"doc": OLD}, {"doc": NEW}),
    "create": Operation(write_doc, {"doc": None}, {"doc": NEW}),
    "update": Operation(update_doc, {"doc": OLD}, {"doc": bump(OLD)}),
    "transaction": Operation(
        transaction,
        {"tx/a": OLD, "tx/b": None, "tx/c": OLD},
        {"tx/a": bump(OLD), "tx/b": NEW, "tx/c": None},
    ),
    "checkpoint": Operation(
        checkpoint, {"cp/a": OLD, "cp/b": OLD, "cp/c": None}, LOGGED, log_three_changes, LOGGED
    ),
}
SCENARIOS = [
    *((backend, op) for backend in CRASH_SAFE for op in ("write", "create", "update")),
    *(("journal", op) for op in ("write", "create", "update", "transaction", "checkpoint")),
]
FAULTS: dict[str, tuple[str | None, Fault]] = {
    "ENOSPC": (None, os_error(errno.ENOSPC)),
    "EIO": (None, os_error(errno.EIO)),
    "EACCES": (None, os_error(errno.EACCES)),
    "EXDEV": ("replace", os_error(errno.EXDEV)),
    "winerror5": ("replace", access_denied_by_windows),
}
"""Each fault: the primitive it hits (None: every call in turn) and the error."""


@dataclass(frozen=True)
class Probe:
    calls: list[Call]
    counts: Counter[str]


@dataclass(frozen=True)
class Scenario:
    backend: str
    operation: str

    @property
    def op(self) -> Operation:
        return OPERATIONS[self.operation]

    @property
    def options(self) -> dict[str, Any]:
        if self.backend == "atomic":
            return {"replace_timeout": 0.005}
        if self.backend == "journal":  # publish before acknowledging, so the calls are fixed
            delay = 3600 if self.operation == "checkpoint" else None
            return {"publish_delay": delay, "preallocate_bytes": 4096, "replace_timeout": 0.005}
        return {}

    def open(self, root: Path, fs: FileSystem) -> ss.Store:
        return ss.open_store(root, self.backend, fs=fs, **self.options)

    def seed(self, root: Path) -> None:
        with self.open(root, FaultyFS(root)) as store:
            for key, value in self.op.seeded.items():
                if value is not None:
                    store.write(key, value)

    def probe(self, root: Path, template: Path) -> Probe:
        """The calls the operation makes when nothing fails."""
        shutil.copytree(template, root)
        fs = FaultyFS(root)
        with self.open(root, fs) as store:
            self.op.prepare(store)
            assert documents(store, self.op.before) == self.op.before
            fs.arm(None)
            self.op.run(store)
            probe = Probe(list(fs.calls), Counter(fs.counts))
            assert documents(store, self.op.after) == self.op.after
        return probe

    def commit_point(self, calls: list[Call]) -> int | None:
        """The call after which the new documents are the outcome; None: nothing changes."""
        if self.op.before == self.op.after:
            return None
        backup = f"{STATE_DIR}/backup/"
        for index, (primitive, target) in enumerate(calls):
            if self.backend == "atomic" and primitive == "replace":
                return index
            if self.backend == "lockfile" and primitive == "unlink" and target.startswith(backup):
                return index
            if self.backend == "journal" and primitive == "pwrite" and target.endswith(".log"):
                return index  # the commit record (a growing segment's zeros end in " (zeros)")
        raise AssertionError(f"no commit point in {calls}")

    def acknowledged_point(self, calls: list[Call]) -> int | None:
        """The journal's flush of the commit: a failure after it must not fail the commit."""
        commit = self.commit_point(calls)
        if self.backend != "journal" or commit is None:
            return None
        return next(i for i in range(commit, len(calls)) if is_segment_flush(calls[i]))


def documents(store: ss.Store, like: Documents) -> Documents:
    found = {"/".join(key): value for key, value in store.read_many(like).items()}
    return {key: found.get(key) for key in like}


def causes(error: BaseException) -> Iterator[BaseException]:
    cause: BaseException | None = error
    while cause is not None:
        yield cause
        cause = cause.__cause__


def is_segment_flush(call: Call) -> bool:
    return call[0] == "fsync" and call[1].endswith(".log")


def swallowed_on_purpose(scenario: Scenario, fault: str, call: Call) -> bool:
    """Failures an operation may survive: a retried sharing violation, an optional cleanup.

    (And every failure after a journal commit's flush: see ``acknowledged_point``.)
    """
    if scenario.backend in ("atomic", "journal") and fault == "winerror5":
        return True  # both retry a replace that Windows refuses while a reader has the file
    journal = f"{STATE_DIR}/journal/"  # removing or closing a segment a checkpoint superseded
    return (
        scenario.backend == "journal"
        and call[0] in ("unlink", "close")
        and call[1].startswith(journal)
    )


def refuses_everything(store: ss.Store, keys: Documents) -> None:
    """A poisoned journal: every call raises BackendPoisonedError until the store is reopened."""
    calls: list[Callable[[], object]] = [
        lambda: store.write("later", 1),
        lambda: store.read(next(iter(keys))),
        lambda: store.update("later", lambda n: n, default=0),
        lambda: store.read_many(keys),
        lambda: store.get("later"),
        lambda: store.exists("later"),
        store.list,
        lambda: store.remove("later"),
        lambda: checkpoint(store),
    ]
    for call in calls:
        with pytest.raises(ss.BackendPoisonedError, match="reopen"):
            call()
    with pytest.raises(ss.BackendPoisonedError), store.transaction() as tx:
        tx.write("later", 1)


def close_while_failing(store: ss.Store, fs: FaultyFS) -> bool:
    """Closing may fail too, but only with a typed error. Returns whether it failed."""
    error: Exception | None = None
    try:
        store.close()
    except Exception as exc:
        error = exc
    assert store.closed
    if error is not None:
        assert isinstance(error, ss.StorageError), f"close raised an untyped {error!r}"
        poisoned = isinstance(error, ss.BackendPoisonedError)
        assert poisoned or any(cause in fs.injected for cause in causes(error)), error
    return error is not None


@dataclass
class Tally:
    runs: int = 0
    injected: int = 0
    failed: int = 0
    survived: int = 0
    poisoned: int = 0
    after_commit: int = 0
    close_failed: int = 0
    temporary_files_left: int = 0
    """Runs that left temporary files for the next opening to sweep."""
    complete: bool = False
    """Every N was injected and passed."""


TALLY: dict[tuple[str, str, str, str], Tally] = {}


def inject(
    scenario: Scenario,
    template: Path,
    root: Path,
    probe: Probe,
    fault: str,
    at: int,
    persistent: bool,
    tally: Tally,
) -> None:
    op = scenario.op
    primitive, make_error = FAULTS[fault]
    shutil.copytree(template, root)
    fs = FaultyFS(root)
    store = scenario.open(root, fs)
    op.prepare(store)
    fs.arm(make_error, at, primitive=primitive, persistent=persistent)
    error: Exception | None = None
    try:
        op.run(store)
    except Exception as exc:
        error = exc
    fs.heal()

    first = fs.first_failure
    assert first is not None, "the fault never fired"
    failed_call = fs.calls[first]
    where = f"{fault} {'from' if persistent else 'at'} call {first} {failed_call}"
    assert fs.calls[:first] == probe.calls[:first], f"{where}: the calls before it differ"
    commit = scenario.commit_point(probe.calls)
    committed = commit is not None and first > commit
    acknowledged = scenario.acknowledged_point(probe.calls)
    standing = acknowledged is not None and first > acknowledged
    injected = len(fs.injected)
    if error is None:
        assert standing or swallowed_on_purpose(scenario, fault, failed_call), (
            f"{where}: no error raised"
        )
        expected = op.after
    else:
        assert not standing, f"{where}: the commit was flushed, yet it raised {error!r}"
        assert isinstance(error, ss.StorageError), f"{where}: untyped {error!r}"
        assert any(e in fs.injected for e in causes(error)), f"{where}: {error!r} hides the cause"
        if isinstance(error, ss.StorageIOError):
            cause = error.__cause__
            assert isinstance(cause, OSError), where
            assert cause in fs.injected, f"{where}: {cause!r} was not injected"
            assert (error.errno, error.filename) == (cause.errno, cause.filename), where
        else:
            assert isinstance(error, ss.BackendPoisonedError), f"{where}: {error!r}"
            assert scenario.backend == "journal", where
        expected = op.after if committed else op.before

    if scenario.backend != "journal" and not (persistent and scenario.backend == "lockfile"):
        # On disk at once, not only after the next opening: other programs read the files.
        for key, value in expected.items():
            assert on_disk(root, key) == value, f"{where}: {key} on disk"
    if not persistent:
        assert temporary_files(root) == [], f"{where}: cleaned up at once"

    poisoned = False
    if scenario.backend == "journal":
        try:
            store.read_many(op.after)
        except ss.BackendPoisonedError:
            poisoned = True
    if is_segment_flush(failed_call):
        assert poisoned, f"{where}: a failed flush of the log must poison the journal"
    if poisoned:
        refuses_everything(store, op.after)
    else:
        assert documents(store, op.after) == expected, f"{where}: read back before reopening"
        store.write("later", {"n": 1})
        assert store.read("later") == {"n": 1}, where

    close_failed = False
    if persistent:
        fs.arm(make_error, 0, primitive=primitive, persistent=True)
        close_failed = close_while_failing(store, fs)
    else:
        store.close()
    assert not fs.fd_paths, f"{where}: descriptors left open: {fs.fd_paths}"
    left = bool(temporary_files(root))

    healthy = FaultyFS(root)
    with scenario.open(root, healthy) as reopened:
        assert documents(reopened, op.after) == expected, f"{where}: after reopening"
        assert temporary_files(root) == [], f"{where}: after reopening"
        if scenario.backend == "lockfile":
            assert leftovers(root) == [], f"{where}: after reopening"
        reopened.write("after", {"reopened": True})
        assert reopened.read("after") == {"reopened": True}, where

    tally.runs += 1
    tally.injected += injected
    tally.failed += error is not None
    tally.survived += error is None
    tally.after_commit += committed
    tally.poisoned += poisoned
    tally.close_failed += close_failed
    tally.temporary_files_left += left


@pytest.mark.parametrize("mode", ["once", "persistent"])
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize(
    ("backend", "operation"), SCENARIOS, ids=[f"{b}-{o}" for b, o in SCENARIOS]
)
@pytest.mark.usefixtures("entry_points_once")
def test_an_os_error_at_any_call_of_a_write(
    tmp_path: Path, backend: str, operation: str, fault: str, mode: str
) -> None:
    scenario = Scenario(backend, operation)
    template = tmp_path / "template"
    scenario.seed(template)
    probe = scenario.probe(tmp_path / "probe", template)
    primitive = FAULTS[fault][0]
    count = len(probe.calls) if primitive is None else probe.counts[primitive]
    assert count > 0, f"{backend} {operation} made no {primitive} call"
    tally = TALLY.setdefault((backend, operation, fault, mode), Tally())
    for at in range(count):
        inject(
            scenario, template, tmp_path / str(at), probe, fault, at, mode == "persistent", tally
        )
        shutil.rmtree(tmp_path / str(at))
    tally.complete = True


# -- Windows sharing violations ---------------------------------------------------------
class SharingViolations(FileSystem):
    """``replace`` fails ``failures`` times as Windows does while another program reads the file."""

    def __init__(self, failures: int, winerror: int | None) -> None:
        self.failures = failures
        self.winerror = winerror
        self.calls = 0

    def replace(self, src: str, dst: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            error = WindowsPermissionError(errno.EACCES, "Access is denied", dst)
            if self.winerror is not None:
                error.winerror = self.winerror
            raise error
        super().replace(src, dst)


@pytest.mark.parametrize("winerror", [5, 32, 33])
def test_a_sharing_violation_on_replace_is_retried_and_counted(
    tmp_path: Path, winerror: int
) -> None:
    seed(tmp_path, "atomic", OLD)
    fs = SharingViolations(failures=3, winerror=winerror)
    with ss.open_store(tmp_path, backend="atomic", fs=fs, replace_timeout=60) as store:
        receipt = store.write("doc", NEW)
    assert receipt.retries == 3
    assert fs.calls == 4
    assert stored(tmp_path, "atomic") == NEW
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("winerror", [None, 2], ids=["posix", "not-a-sharing-error"])
def test_other_permission_errors_are_not_retried(tmp_path: Path, winerror: int | None) -> None:
    seed(tmp_path, "atomic", OLD)
    fs = SharingViolations(failures=1, winerror=winerror)
    with ss.open_store(tmp_path, backend="atomic", fs=fs, replace_timeout=60) as store:
        with pytest.raises(ss.StorageIOError) as info:
            store.write("doc", NEW)
    assert fs.calls == 1
    assert info.value.errno == errno.EACCES
    assert isinstance(info.value.__cause__, PermissionError)
    assert stored(tmp_path, "atomic") == OLD
    assert leftovers(tmp_path) == []


def test_sharing_violations_give_up_after_the_replace_timeout(tmp_path: Path) -> None:
    seed(tmp_path, "atomic", OLD)
    fs = SharingViolations(failures=1000, winerror=32)
    with ss.open_store(tmp_path, backend="atomic", fs=fs, replace_timeout=0) as store:
        with pytest.raises(ss.StorageIOError) as info:
            store.write("doc", NEW)
    assert fs.calls == 1
    assert getattr(info.value.__cause__, "winerror", None) == 32
    assert stored(tmp_path, "atomic") == OLD
    assert leftovers(tmp_path) == []


# -- crashes: the process dies mid-write ------------------------------------------------
class Crash(BaseException):
    """The process died: nothing after this point runs, no cleanup either."""


class Mortal(FileSystem):
    """Dies at primitive call ``at`` (a write there writes half its bytes first).

    Every later call raises :class:`Crash` too, so no ``except`` or ``finally``
    in the backend can clean up: the disk is left as a killed process leaves it.
    """

    def __init__(self, at: int = -1) -> None:
        self.at = at
        self.calls: list[tuple[str, str]] = []
        self.fd_paths: dict[int, str] = {}
        self.dead = False

    def _step(self, op: str, target: str) -> None:
        if self.dead:
            raise Crash
        self.calls.append((op, target))
        if len(self.calls) - 1 == self.at:
            self.dead = True
            raise Crash

    def bury(self) -> None:
        """Close what the dead process held, as the kernel would."""
        for fd in self.fd_paths:
            os.close(fd)
        self.fd_paths.clear()

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        self._step("open", path)
        fd = super().open(path, flags, mode)
        self.fd_paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        self._step("close", self.fd_paths.get(fd, "?"))
        del self.fd_paths[fd]
        super().close(fd)

    def write(self, fd: int, data: memoryview) -> int:
        if not self.dead and len(self.calls) == self.at:
            os.write(fd, data[: len(data) // 2])
        self._step("write", self.fd_paths.get(fd, "?"))
        return super().write(fd, data)

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        self._step("fsync", self.fd_paths.get(fd, "<directory>"))
        super().fsync(fd, full=full, data_only=data_only)

    def ftruncate(self, fd: int, length: int) -> None:
        self._step("ftruncate", self.fd_paths.get(fd, "?"))
        super().ftruncate(fd, length)

    def chmod(self, path: str, mode: int) -> None:
        self._step("chmod", path)
        super().chmod(path, mode)

    def replace(self, src: str, dst: str) -> None:
        self._step("replace", dst)
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self._step("unlink", path)
        super().unlink(path)

    def mkdir(self, path: str) -> None:
        self._step("mkdir", path)
        super().mkdir(path)


def last_step(backend: str, root: Path) -> tuple[str, str]:
    """The call after which a write has taken effect."""
    if backend == "atomic":
        return "replace", str(root / "doc.json")
    return "unlink", str(root / STATE_DIR / "backup" / "doc.json")


@pytest.fixture
def mortal_filesystems() -> Iterator[list[Mortal]]:
    created: list[Mortal] = []
    yield created
    for fs in created:
        fs.bury()


def crash_during_write(root: Path, backend: str, at: int, graves: list[Mortal]) -> Mortal:
    fs = Mortal()
    graves.append(fs)
    store = ss.open_store(root, backend=backend, fs=fs)
    fs.calls.clear()
    fs.at = at
    with pytest.raises(Crash):
        store.write("doc", NEW)
    fs.bury()
    return fs


@pytest.mark.parametrize("previous", [OLD, None], ids=["overwrite", "create"])
@pytest.mark.parametrize("backend", CRASH_SAFE)
def test_a_crash_at_any_call_of_a_write_leaves_the_old_or_the_new_document(
    tmp_path: Path,
    backend: str,
    previous: dict[str, Any] | None,
    mortal_filesystems: list[Mortal],
) -> None:
    probe_root = tmp_path / "probe"
    seed(probe_root, backend, previous)
    probe = Mortal()
    with ss.open_store(probe_root, backend=backend, fs=probe) as store:
        probe.calls.clear()
        store.write("doc", NEW)
    calls = list(probe.calls)
    commit = calls.index(last_step(backend, probe_root))
    assert len(calls) > commit + 1, "the probe should see calls after the commit point"
    for at, call in enumerate(calls):
        root = tmp_path / f"crash-{at}"
        seed(root, backend, previous)
        crash_during_write(root, backend, at, mortal_filesystems)
        assert stored(root, backend) == (NEW if at > commit else previous), (at, call)
        if backend == "lockfile":
            assert leftovers(root) == [], (at, call)


def test_lockfile_restores_a_torn_document_when_the_store_is_opened_again(
    tmp_path: Path, mortal_filesystems: list[Mortal]
) -> None:
    seed(tmp_path, "lockfile", OLD)
    old_bytes = (tmp_path / "doc.json").read_bytes()
    probe = Mortal()
    with ss.open_store(tmp_path / "probe", backend="lockfile", fs=probe) as store:
        store.write("doc", OLD)
        probe.calls.clear()
        store.write("doc", NEW)
    document_write = probe.calls.index(("write", str(tmp_path / "probe" / "doc.json")))

    crash_during_write(tmp_path, "lockfile", document_write, mortal_filesystems)
    torn = (tmp_path / "doc.json").read_bytes()
    assert torn not in {old_bytes, codec.encode(NEW)}
    assert torn.startswith(codec.encode(NEW)[: len(codec.encode(NEW)) // 2])
    with pytest.raises(ValueError):
        codec.decode(torn)
    assert (tmp_path / STATE_DIR / "backup" / "doc.json").exists()

    with ss.open_store(tmp_path, backend="lockfile") as store:
        assert store.read("doc") == OLD
    assert (tmp_path / "doc.json").read_bytes() == old_bytes
    assert leftovers(tmp_path) == []


# -- the sweep of temporary files ---------------------------------------------------------
HEX = "0123456789abcdef"
OURS = [
    f".doc.json.{HEX}{TEMP_MARKER}",
    f"a/.b.json.{HEX}{TEMP_MARKER}",
    f"a/b/.c d.json.{HEX[::-1]}{TEMP_MARKER}",
]
NOT_OURS = [
    f"doc.json.{HEX}{TEMP_MARKER}",  # no leading dot
    f".doc.json.{HEX.upper()}{TEMP_MARKER}",  # not the lower-case hex of temp_path()
    f".doc.json.{HEX[:-1]}{TEMP_MARKER}",  # 15 digits
    f".doc.json.{HEX}{TEMP_MARKER}.bak",  # something after the marker
    f".doc.json.{HEX}.tmp",
    f".notes.txt.{HEX}{TEMP_MARKER}",  # beside no document
    f"..json.{HEX}{TEMP_MARKER}",  # of no valid key
    f".NUL.json.{HEX}{TEMP_MARKER}",
    f"user{TEMP_MARKER}",
    f".hidden/.doc.json.{HEX}{TEMP_MARKER}",  # in directories no key reaches
    f"x.json/.doc.json.{HEX}{TEMP_MARKER}",
    f"{STATE_DIR}/.doc.json.{HEX}{TEMP_MARKER}",
    f"{STATE_DIR}/locks/.doc.json.{HEX}{TEMP_MARKER}",
    f".doc.json.{HEX}.other{TEMP_MARKER}",  # a kind of temporary file no backend names
]
JOURNALS = [f".doc.json.{HEX}.jnl{TEMP_MARKER}", f"a/.b.json.{HEX[::-1]}.jnl{TEMP_MARKER}"]
"""The journal's: written under its writer lock, not a document's; only the journal sweeps them."""


def make(root: Path, relative: str, data: bytes = b"user data") -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("backend", ["naive", "lockfile", "atomic", "journal"])
def test_opening_deletes_the_library_s_temporary_files_and_nothing_else(
    tmp_path: Path, backend: str
) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    document = make(root, "a/b.json", b'{"kept": true}')
    ours = OURS + JOURNALS if backend == "journal" else OURS
    not_ours = NOT_OURS + JOURNALS if backend != "journal" else NOT_OURS
    for name in ours + not_ours:
        make(root, name)
    (root / f".dir.json.{HEX}{TEMP_MARKER}").mkdir()
    victim = make(outside, "victim.json")
    outside_temp = make(outside, f".doc.json.{HEX}{TEMP_MARKER}")
    (root / f".link.json.{HEX}{TEMP_MARKER}").symlink_to(victim)
    (root / "linked").symlink_to(outside, target_is_directory=True)

    with ss.open_store(root, backend) as store:
        assert [name for name in ours if (root / name).exists()] == []
        assert [name for name in not_ours if not (root / name).exists()] == []
        assert (root / f".dir.json.{HEX}{TEMP_MARKER}").is_dir()
        assert (root / f".link.json.{HEX}{TEMP_MARKER}").is_symlink()
        assert victim.read_bytes() == outside_temp.read_bytes() == b"user data"
        assert document.read_bytes() == b'{"kept": true}'
        assert store.read("a/b") == {"kept": True}


def test_the_sweep_returns_what_it_deleted(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "atomic") as store:
        backend = store.backend("atomic")
        assert isinstance(backend, FileBackend)
        made = [make(tmp_path, name) for name in OURS]
        assert sorted(backend.sweep_temporary_files()) == sorted(map(str, made))
        assert backend.sweep_temporary_files() == []


HOLDER = """
import sys
import storage_shim as ss

with ss.open_store(sys.argv[1], sys.argv[2]) as store:
    with store.backend(sys.argv[2]).lock(("doc",)):
        print("locked", flush=True)
        sys.stdin.readline()
"""


@pytest.mark.parametrize("backend", CRASH_SAFE)
def test_the_sweep_keeps_the_temporary_file_of_a_live_writer(tmp_path: Path, backend: str) -> None:
    """A writer in another process holds the document's lock while its temporary file exists."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), backend],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline() == "locked\n"
        live = make(tmp_path, f".doc.json.{HEX}{TEMP_MARKER}")
        dead = make(tmp_path, f".other.json.{HEX}{TEMP_MARKER}")
        with ss.open_store(tmp_path, backend):
            assert live.exists()
            assert not dead.exists()
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait()
        holder.stdout.close()
    assert holder.returncode == 0
    with ss.open_store(tmp_path, backend):
        assert not live.exists()


# -- a real full disk -------------------------------------------------------------------
def cannot(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the real full-disk test: {reason}")
    pytest.skip(reason)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of the given size for the test; always unmounted after it.

    Elsewhere the test skips with the reason; under CI (root, as the guarantee
    table cites it) not being able to mount is a failure.
    """
    if os.geteuid() != 0:
        cannot("mounting a tmpfs needs root")
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        cannot("mount/umount not found")
    mounted: list[Path] = []

    def mount_one(size: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        result = subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            cannot(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(point)
        return point

    try:
        yield mount_one
    finally:
        for point in mounted:
            subprocess.run([umount, "-l", str(point)], check=True)


@pytest.mark.parametrize(
    ("previous_size", "new_size"),
    [(1_000, 200_000), (40_000, 40_000)],
    ids=["new-too-big", "no-room-for-a-copy"],
)
@pytest.mark.parametrize("backend", CRASH_SAFE)
def test_a_full_disk_keeps_the_previous_document(
    tmpfs: Callable[[str], Path], backend: str, previous_size: int, new_size: int
) -> None:
    tiny_disk = tmpfs("64k")
    previous = {"pad": "o" * previous_size}
    seed(tiny_disk, backend, previous)
    with ss.open_store(tiny_disk, backend=backend) as store:
        with pytest.raises(ss.StorageIOError) as info:
            store.write("doc", {"pad": "n" * new_size})
        assert info.value.errno == errno.ENOSPC
        assert isinstance(info.value.__cause__, OSError)
        assert store.read("doc") == previous
    assert stored(tiny_disk, backend) == previous
    assert leftovers(tiny_disk) == []


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the file to delete to give them back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for size in (1 << 20, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free == 0
    return filler


def test_a_full_disk_fails_a_journal_commit_typed_and_loses_nothing(
    tmpfs: Callable[[str], Path],
) -> None:
    disk = tmpfs("8m")
    previous = {"a": {"pad": "a" * 1000}, "b": {"pad": "b" * 1000}}
    big = {"pad": "n" * 1_500_000}  # more than the segment's preallocated mebibyte
    with ss.open_store(disk, "journal") as store:
        for key, value in previous.items():
            store.write(key, value)
    filler = fill(disk)

    store = ss.open_store(disk, "journal")  # nothing to replay: opening needs no space
    with pytest.raises(ss.StorageIOError) as info:
        store.write("big", big)
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(ss.BackendPoisonedError):
        store.read("a")
    store.close()
    assert {key: on_disk(disk, key) for key in previous} == previous

    filler.unlink()
    with ss.open_store(disk, "journal") as store:
        assert store.read_many([*previous, "big"]) == {(k,): v for k, v in previous.items()}
        store.write("big", big)
    with ss.open_store(disk, "journal") as store:
        assert store.read("big") == big
    assert temporary_files(disk) == []


# -- figures ------------------------------------------------------------------------------
def test_fault_injection_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the faults the matrix above injected in this session (shown without -s too).

    Also checks that the matrix reached what it is there to check: temporary
    files left for the next opening to sweep, and a poisoned journal.
    """
    columns = {
        "runs": "runs",
        "injected": "faults",
        "failed": "raised",
        "survived": "survived",
        "after_commit": "late",
        "poisoned": "poisoned",
        "close_failed": "close",
        "temporary_files_left": "swept",
    }
    lines = [f"{'':43}" + "".join(f"{title:>9}" for title in columns.values())]
    total = Tally()
    for (backend, operation, fault, mode), tally in sorted(TALLY.items()):
        if tally.complete and FAULTS[fault][0] is None:  # the matrix must reach these
            assert tally.temporary_files_left > 0 or mode == "once", "the sweep went untested"
            assert tally.poisoned > 0 or backend != "journal", "poisoning went untested"
        figures = "".join(f"{getattr(tally, name):9}" for name in columns)
        status = "" if tally.complete else "  (stopped by a failure)"
        lines.append(f"{backend:9}{operation:12}{fault:11}{mode:11}{figures}{status}")
        for name in columns:
            setattr(total, name, getattr(total, name) + getattr(tally, name))
    lines.append(f"{'total':43}" + "".join(f"{getattr(total, name):9}" for name in columns))
    with capsys.disabled():
        print("\nfault injection (late: after the commit point; swept: temporary files left")
        print("for the next opening to delete)\n" + "\n".join(lines))
