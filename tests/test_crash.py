"""Simulated power loss: the file-system model, the crash states, and what recovery makes of them.

The built-in crash-safe backends must survive every state; broken variants of
them (registered through a plugin, as a host would) must each be caught, or the
harness proves nothing. ``STORAGE_SHIM_DEEP=1`` runs every three-step workload
over three documents with the deep limits instead of the quick selection.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import selected_backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import storage_shim as ss
from storage_shim.backend import WriteOutcome
from storage_shim.backends import AtomicBackend, JournalBackend, LockfileBackend
from storage_shim.backends.files import STATE_DIR, TEMP_MARKER
from storage_shim.backends.lockfile import _ABSENT, _PRESENT
from storage_shim.fs import (
    CREATE_EXCL_FLAGS,
    READ_FLAGS,
    TRUNCATE_FLAGS,
    WRITE_FLAGS,
    FileSystem,
)
from storage_shim.journal import records
from storage_shim.keys import SUFFIX
from storage_shim.testing import crash
from storage_shim.testing.crash import (
    DOCS_3,
    OPS,
    Choice,
    Commit,
    CrashReport,
    Limits,
    Oracle,
    Session,
    Step,
    Unreadable,
    Workload,
    check_crash_safety,
    crash_choices,
    durable_records,
    record_workload,
    replay,
    standard_workloads,
)
from storage_shim.testing.simfs import BypassError, SimFS, forbid_real_io

DEEP = crash.deep()
LIMITS = Limits.deep() if DEEP else Limits()
SELECTED = selected_backends()
CRASH_SAFE = [b for b in ("atomic", "lockfile") if b in SELECTED]


def crash_workloads() -> list[Workload]:
    """Deep: every workload of up to three steps over three documents. Quick: every one of up
    to two steps over two documents, and a fixed sample of the three-step ones."""
    if DEEP:
        return standard_workloads(3, DOCS_3)
    two = standard_workloads(2)
    longer = standard_workloads(3)[len(two) :]
    return two + random.Random(4).sample(longer, 12)


def sim_with(*directories: str) -> SimFS:
    fs = SimFS()
    for directory in directories:
        fs.image.makedirs(directory)
    return fs


def put(fs: SimFS, path: str, data: bytes, *, sync: bool = False) -> None:
    fd = fs.open(path, CREATE_EXCL_FLAGS)
    try:
        fs.write_all(fd, data)
        if sync:
            fs.fsync(fd)
    finally:
        fs.close(fd)


# -- the simulated file system ------------------------------------------------------------
HELPERS = {"write_all", "pwrite_all", "read_fd", "read_file", "exists", "makedirs"}


def test_the_simulation_overrides_every_primitive() -> None:
    primitives = {
        name
        for name, value in vars(FileSystem).items()
        if callable(value) and not name.startswith("_") and name not in HELPERS
    }
    assert primitives == {
        "open", "close", "write", "read", "pwrite", "pread", "fstat", "fsync", "ftruncate",
        "chmod", "fsync_dir", "replace", "unlink", "link", "mkdir", "lstat", "lock", "scandir",
    }  # fmt: skip
    assert sorted(primitives - set(vars(SimFS))) == []


def test_open_follows_the_flags() -> None:
    fs = sim_with("/d")
    with pytest.raises(FileNotFoundError):
        fs.open("/d/f", READ_FLAGS)
    put(fs, "/d/f", b"hello")
    with pytest.raises(FileExistsError):
        fs.open("/d/f", CREATE_EXCL_FLAGS)
    with pytest.raises(FileNotFoundError):
        fs.open("/missing/f", WRITE_FLAGS)
    with pytest.raises(NotADirectoryError):
        fs.open("/d/f/g", WRITE_FLAGS)
    with pytest.raises(IsADirectoryError):
        fs.open("/d", WRITE_FLAGS)
    assert fs.lstat("/d/f").st_mode == stat.S_IFREG | 0o644  # 0o666 less the umask
    reader = fs.open("/d/f", READ_FLAGS)
    assert fs.read(reader, 100) == b"hello"
    with pytest.raises(OSError) as info:
        fs.write(reader, memoryview(b"x"))
    assert info.value.errno == errno.EBADF
    truncating = fs.open("/d/f", TRUNCATE_FLAGS)
    assert fs.fstat(reader).st_size == 0
    with pytest.raises(OSError) as info:
        fs.read(truncating, 1)
    assert info.value.errno == errno.EBADF
    fs.close(truncating)
    with pytest.raises(OSError) as info:
        fs.close(truncating)
    assert info.value.errno == errno.EBADF


def test_positions_and_writes_past_the_end() -> None:
    fs = sim_with("/d")
    fd = fs.open("/d/f", os.O_RDWR | os.O_CREAT)
    assert fs.write(fd, memoryview(b"ab")) == 2
    assert fs.pwrite(fd, memoryview(b"z"), 5) == 1
    fs.write_all(fd, b"c")
    assert fs.pread(fd, 10, 0) == b"abc\0\0z"
    assert fs.read(fd, 2) == b"\0\0"
    assert fs.read(fd, 10) == b"z"
    assert fs.read(fd, 10) == b""
    st_file = fs.fstat(fd)
    assert (st_file.st_size, st_file.st_ino) == (6, fs.lstat("/d/f").st_ino)
    fs.ftruncate(fd, 2)
    assert fs.read_file("/d/f") == b"ab"


def test_names_directories_and_modes() -> None:
    fs = sim_with("/d")
    put(fs, "/d/old", b"1")
    put(fs, "/d/new", b"2")
    fs.replace("/d/new", "/d/old")
    assert fs.read_file("/d/old") == b"2"
    assert not fs.exists("/d/new")
    with pytest.raises(FileNotFoundError):
        fs.replace("/d/new", "/d/old")
    fs.mkdir("/d/sub")
    with pytest.raises(FileExistsError):
        fs.mkdir("/d/sub")
    with pytest.raises(FileNotFoundError):
        fs.mkdir("/d/none/sub")
    with pytest.raises(IsADirectoryError):
        fs.unlink("/d/sub")
    assert stat.S_ISDIR(fs.lstat("/d/sub").st_mode)
    with pytest.raises(NotADirectoryError):
        fs.lstat("/d/old/x")
    assert [(e.name, e.is_dir, e.is_file) for e in fs.scandir("/d")] == [
        ("old", False, True),
        ("sub", True, False),
    ]
    with pytest.raises(FileNotFoundError):
        list(fs.scandir("/d/none"))
    with pytest.raises(NotADirectoryError):
        list(fs.scandir("/d/old"))
    fs.chmod("/d/old", 0o600)
    assert stat.S_IMODE(fs.lstat("/d/old").st_mode) == 0o600
    fs.unlink("/d/old")
    with pytest.raises(FileNotFoundError):
        fs.unlink("/d/old")
    fs.makedirs("/d/a/b")
    assert fs.image.existing("/d/a/b")


def test_the_lock_excludes_other_threads_and_times_out() -> None:
    fs = sim_with("/d")
    outcome: list[str] = []

    def contend() -> None:
        try:
            with fs.lock("/d/k.lock", 0.01):
                outcome.append("acquired")
        except TimeoutError:
            outcome.append("timed out")

    with fs.lock("/d/k.lock", 1):
        thread = threading.Thread(target=contend)
        thread.start()
        thread.join()
        with pytest.raises(TimeoutError):
            fs.lock("/d/k.lock", 0).__enter__()
    contend()
    assert outcome == ["timed out", "acquired"]
    reused = fs.lock("/d/k.lock", 0)
    for _ in range(2):
        with reused:
            pass
    lazy = fs.lock("/d/new/k.lock", 0)
    assert not fs.exists("/d/new/k.lock")
    with lazy:  # like filelock: the lock file and its directories appear on entry
        assert fs.exists("/d/new/k.lock")
    assert [r.label for r in fs.log[-2:]] == ["mkdir /d/new", "create /d/new/k.lock"]


def test_real_io_is_refused_while_the_backend_runs(tmp_path: Path) -> None:
    bypasses: list[str] = []
    target = os.path.join(tmp_path, "f")
    with forbid_real_io(bypasses):
        with pytest.raises(BypassError):
            os.open(target, os.O_WRONLY | os.O_CREAT)
        with pytest.raises(BypassError):
            open(target, "wb")  # noqa: SIM115
        with contextlib.suppress(OSError):  # a backend swallowing OSError still gets caught
            with pytest.raises(BypassError):
                os.replace(target, target)
    assert [b.split("(")[0] for b in bypasses] == ["os.open", "open", "os.replace"]
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert os.path.exists(target)


# -- the persistence model ----------------------------------------------------------------
def labels(fs: SimFS, indices: Iterable[int]) -> list[str]:
    return [fs.log[i].label for i in sorted(indices)]


def test_fsync_makes_the_data_durable_and_the_directory_fsync_the_name() -> None:
    fs = sim_with("/d")
    fd = fs.open("/d/f", CREATE_EXCL_FLAGS)
    fs.write_all(fd, b"data")
    assert durable_records(fs.log) == set()
    fs.fsync(fd)
    fs.close(fd)
    assert labels(fs, durable_records(fs.log)) == ["write /d/f[0:4]"]
    fs.fsync_dir("/d")
    assert labels(fs, durable_records(fs.log)) == ["create /d/f", "write /d/f[0:4]"]


def outcomes(fs: SimFS, *, last_only: bool = False) -> set[tuple[tuple[str, bytes], ...]]:
    """The distinct trees (as sorted file contents) of the crash states of ``fs``'s log."""
    start = sim_with("/d").image
    found = set()
    for point in range(len(fs.log) if last_only else 0, len(fs.log) + 1):
        for choice in crash_choices(fs.log, point, Limits(), random.Random(0)):
            found.add(tuple(sorted(replay(start, fs.log, choice).files().items())))
    return found


def test_an_unsynced_write_may_be_lost_cut_or_garbage() -> None:
    fs = sim_with("/d")
    fs.mark_durable()
    put(fs, "/d/f", b"data")
    contents = {dict(tree).get("/d/f") for tree in outcomes(fs)}
    garbage = [c for c in contents if c and len(c) == 4 and c not in {b"data", bytes(4)}]
    assert contents >= {None, b"", b"da", b"dat", b"data", bytes(4)}
    assert len(garbage) == 2  # all garbage, and the first half kept with garbage after it
    assert any(c.startswith(b"da") for c in garbage)


def test_a_rename_never_persists_without_the_creation_of_its_source() -> None:
    fs = sim_with("/d")
    put(fs, "/d/t", b"x", sync=True)
    fs.replace("/d/t", "/d/f")
    assert outcomes(fs, last_only=True) == {(), (("/d/t", b"x"),), (("/d/f", b"x"),)}


def test_replaying_every_record_rebuilds_what_the_process_saw() -> None:
    workload = Workload((Step("write", ("dir/b",)), Step("update", ("a",)), Step("reopen")))
    for backend in ("atomic", "lockfile"):
        recording = record_workload(backend, workload)
        everything = Choice(len(recording.log), frozenset(range(len(recording.log))))
        rebuilt = replay(recording.base, recording.log, everything)
        assert rebuilt.files() == recording.final.files()
        assert rebuilt.digest() == recording.final.digest()
        assert [c.label for c in recording.oracle.commits] == ["write dir/b", "update a"]


def test_many_unsynced_operations_are_sampled_not_enumerated() -> None:
    fs = sim_with("/d")
    for i in range(14):
        put(fs, f"/d/f{i}", b"")
    limits = Limits(random_subsets=10, torn_writes=False)
    choices = list(crash_choices(fs.log, len(fs.log), limits, random.Random(0)))
    assert len({c.kept for c in choices}) <= 2 + 13 + 2 * 14 + 10
    assert frozenset() in {c.kept for c in choices}
    assert frozenset(range(14)) in {c.kept for c in choices}


# -- the oracle -----------------------------------------------------------------------
def test_the_oracle_keeps_transactions_whole_and_commits_in_order() -> None:
    oracle = Oracle({"a": 1})
    oracle.commits = [
        Commit({"a": 2, "b": 3}, started=0, ended=10, label="transaction a b"),
        Commit({"a": 4}, started=10, ended=20, label="write a"),
    ]
    during = oracle.at(5)
    assert during.problems({"a": 1}) == []
    assert during.problems({"a": 2, "b": 3}) == []
    [torn] = during.problems({"a": 2})
    assert "not a prefix of the commits" in torn
    after = oracle.at(15)
    assert after.problems({"a": 4, "b": 3}) == []
    [lost] = after.problems({"a": 1, "b": 3})
    assert lost.startswith("a: acknowledged write lost: found 1 (from before 'transaction a b')")
    assert "b: acknowledged write lost" in oracle.at(20).problems({"a": 4})[0]
    [unreadable] = after.problems({"a": Unreadable("empty file"), "b": 3})
    assert unreadable.startswith("a is unreadable (empty file)")
    [invented] = after.problems({"a": 99, "b": 3})
    assert "never written" in invented
    assert Oracle({"a": 1}, oracle.commits, durable=False).at(20).problems({"a": 1}) == []


# -- the built-in backends ------------------------------------------------------------
if CRASH_SAFE:

    @pytest.mark.parametrize("backend", CRASH_SAFE)
    def test_crash_safe_backends_survive_every_crash_state(backend: str) -> None:
        workloads = crash_workloads()
        report = check_crash_safety(backend, workloads=workloads, limits=LIMITS)
        print(report.figures())
        assert report.ok, report.summary()
        assert report.workloads == len(workloads)
        assert report.states_checked >= 300
        assert report.states_unique > report.states_checked  # later workloads reuse results

    STEPS = [Step(op, (doc.key,)) for op in ("write", "remove", "update") for doc in DOCS_3] + [
        Step("reopen")
    ]

    @pytest.mark.parametrize("backend", CRASH_SAFE)
    @settings(
        max_examples=40 if DEEP else 3,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(steps=st.lists(st.sampled_from(STEPS), min_size=4, max_size=12 if DEEP else 7))
    def test_longer_workloads_survive_too(backend: str, steps: list[Step]) -> None:
        workload = Workload(tuple(steps), DOCS_3)
        report = check_crash_safety(backend, workloads=[workload], limits=LIMITS)
        assert report.ok, report.summary()


if "journal" in SELECTED:
    TRANSACTION = Step("transaction", ("a", "dir/b"))
    JOURNAL_STEPS = [TRANSACTION, Step("checkpoint")]

    def journal_workloads() -> list[Workload]:
        """Its publishing leaves many unsynced operations, so far fewer workloads than above."""
        if not DEEP:
            return [
                Workload((TRANSACTION,)),
                Workload((Step("write", ("a",)), Step("checkpoint"))),
                Workload((TRANSACTION, Step("remove", ("dir/b",)))),
            ]
        ones = standard_workloads(1, extra=JOURNAL_STEPS)
        twos = standard_workloads(2, extra=JOURNAL_STEPS)[len(ones) :]
        return ones + random.Random(4).sample(twos, 6)

    def test_the_journal_survives_every_crash_state() -> None:
        limits = Limits() if DEEP else Limits(exhaustive_up_to=6, recovery_crash_states=1)
        report = check_crash_safety(
            "journal",
            workloads=journal_workloads(),
            limits=limits,
            publish_delay=None,  # publishing in the committing thread: a repeatable log
            preallocate_bytes=4096,
        )
        print(report.figures())
        assert report.ok, report.summary()
        assert report.states_checked >= 200


if "lockfile" in SELECTED:

    def test_a_crash_during_lockfile_recovery_recovers() -> None:
        workload = Workload((Step("write", ("a",)), Step("write", ("dir/b",))))
        report = check_crash_safety("lockfile", workloads=[workload], limits=LIMITS)
        assert report.ok, report.summary()
        assert report.recovery_states_checked > 0


# -- negative controls: broken backends the harness must catch -------------------------------
class SkipsTheTempFsync(AtomicBackend):
    def _write_unlocked(self, key: ss.Key, data: bytes) -> WriteOutcome:
        path = self.path(key)
        self.prepare_directory(path)
        temp = self.temp_path(path)
        fd = self.fs.open(temp, CREATE_EXCL_FLAGS)
        try:
            self.fs.write_all(fd, data)
        finally:
            self.fs.close(fd)
        self.fs.replace(temp, path)
        return self.outcome(path, file_synced=True)


class SkipsTheDirectoryFsync(AtomicBackend):
    def sync_directory(self, path: str) -> bool:
        return self._sync


class AcknowledgesBeforeSyncing(AtomicBackend):
    """Returns its receipt, then flushes the document at its next call or at close."""

    pending: str | None = None

    def _write_unlocked(self, key: ss.Key, data: bytes) -> WriteOutcome:
        self.flush_pending()
        path = self.path(key)
        self.prepare_directory(path)
        temp = self.temp_path(path)
        fd = self.fs.open(temp, CREATE_EXCL_FLAGS)
        try:
            self.fs.write_all(fd, data)
        finally:
            self.fs.close(fd)
        self.fs.replace(temp, path)
        self.pending = path
        return WriteOutcome(file_synced=True, dir_synced=True)

    def flush_pending(self) -> None:
        if self.pending is not None:
            fd = self.fs.open(self.pending, READ_FLAGS)
            try:
                self.fs.fsync(fd)
            finally:
                self.fs.close(fd)
            self.fs.fsync_dir(os.path.dirname(self.pending))
            self.pending = None

    def remove(self, key: ss.Key) -> bool:
        with self.lock(key):
            self.flush_pending()
            return self.unlink_document(key)

    def close(self) -> None:
        self.flush_pending()


class BacksUpWithoutFsync(LockfileBackend):
    """Publishes the backup by rename without flushing its bytes first."""

    def _save_backup(self, key: ss.Key, previous: bytes | None) -> str:
        backup = self.private_path("backup", key, SUFFIX)
        self.prepare_directory(backup)
        temp = self.temp_path(backup)
        fd = self.fs.open(temp, CREATE_EXCL_FLAGS)
        try:
            self.fs.write_all(fd, _ABSENT if previous is None else _PRESENT + previous)
        finally:
            self.fs.close(fd)
        self.fs.replace(temp, backup)
        self.sync_directory(backup)
        return backup


class RewritesBeforeTheBackupIsDurable(LockfileBackend):
    """Skips the directory fsync that makes the backup's name durable."""

    def sync_directory(self, path: str) -> bool:
        if os.sep + "backup" in path:
            return self._sync
        return super().sync_directory(path)


class DropsTheBackupBeforeRestoring(LockfileBackend):
    """Recovery that a crash of its own loses the previous document to."""

    def _recover_key(self, key: ss.Key) -> bool:
        backup = self.private_path("backup", key, SUFFIX)
        try:
            content = self.fs.read_file(backup)
        except FileNotFoundError:
            return False
        self._drop_backup(backup)
        previous = content[len(_PRESENT) :] if content.startswith(_PRESENT) else None
        assert previous is not None or content == _ABSENT
        self._restore(self.path(key), previous)
        return True


class CountsItsOpenings(AtomicBackend):
    """Recovery that changes the files every time it runs."""

    def recover(self) -> Sequence[ss.Key]:
        directory = os.path.join(self.root, STATE_DIR, "opened")
        self.fs.makedirs(directory)
        count = len(list(self.fs.scandir(directory)))
        self.fs.close(self.fs.open(os.path.join(directory, str(count)), CREATE_EXCL_FLAGS))
        return ()


class RefusesWritesAfterACrash(AtomicBackend):
    """Opens fine after a crash, then fails every write while a temporary file is left."""

    crashed = False

    def recover(self) -> Sequence[ss.Key]:
        self.crashed = any(e.name.endswith(TEMP_MARKER) for e in self.fs.scandir(self.root))
        return ()

    def _write_unlocked(self, key: ss.Key, data: bytes) -> WriteOutcome:
        if self.crashed:
            raise OSError(errno.EROFS, "refusing writes after a crash")
        return super()._write_unlocked(key, data)


class RenamesBehindTheFileSystemObject(AtomicBackend):
    def _replace(self, temp: str, path: str) -> int:
        os.replace(temp, path)
        return 0


# -- negative controls of the journal: what its checksums, flush and new segments prevent ----
class JournalWithoutChecksums(JournalBackend):
    def _read_step(self, window: Any) -> records.Step:
        assert self._header is not None
        salt, offset, seq = self._header.salt, self._offset, self._next_seq
        return records.read_step(window.pread, salt, offset, seq, verify=False)


class JournalAcknowledgingEarly(JournalBackend):
    """Returns from a commit before its record is flushed; flushes at the next commit."""

    owes_a_flush = False

    def commit_locked(self, batch: Sequence[Sequence[Any]]) -> WriteOutcome:
        if self.owes_a_flush:
            self.fs.fsync(self._fd, data_only=True)
        durable, self._sync = self._sync, False
        try:
            super().commit_locked(batch)
        finally:
            self._sync = durable
        self.owes_a_flush = True
        return WriteOutcome(file_synced=True, dir_synced=True)

    def _flush_log(self) -> None:
        """Publishing would flush first, which would make the acknowledgement honest."""


class JournalAppendingAfterATornTail(JournalBackend):
    """Keeps the segment a crash tore and appends its commits after the garbage."""

    def _recover_locked(self) -> Sequence[ss.Key]:
        pointer = self._read_pointer()
        if pointer is None:
            return super()._recover_locked()
        with self._state:
            self._adopt(*self._open_segment(pointer))
            self._catch_up_writer()
            self._torn = False
        return ()

    def commit_locked(self, batch: Sequence[Sequence[Any]]) -> WriteOutcome:
        with self._state:
            self._catch_up_writer()
            if self._torn:
                self._offset, self._torn = self.fs.fstat(self._fd).st_size, False
        return super().commit_locked(batch)

    def _checkpoint_locked(self) -> None:
        with self._state:
            self._catch_up_writer()
            if self._torn:  # no new segment: the torn one stays the log
                return
        super()._checkpoint_locked()


class BrokenVariants:
    """A host's plugin registering the broken backends, as a plugin author would."""

    @staticmethod
    @ss.hookimpl
    def storage_shim_backends() -> Iterable[ss.BackendSpec]:
        return [
            ss.BackendSpec("no_temp_fsync", SkipsTheTempFsync),
            ss.BackendSpec("no_dir_fsync", SkipsTheDirectoryFsync),
            ss.BackendSpec("early_ack", AcknowledgesBeforeSyncing),
            ss.BackendSpec("backup_not_synced", BacksUpWithoutFsync),
            ss.BackendSpec("backup_name_not_synced", RewritesBeforeTheBackupIsDurable),
            ss.BackendSpec("unsafe_recovery", DropsTheBackupBeforeRestoring),
            ss.BackendSpec("restless_recovery", CountsItsOpenings),
            ss.BackendSpec("fragile_recovery", RefusesWritesAfterACrash),
            ss.BackendSpec("bypass", RenamesBehindTheFileSystemObject),
            ss.BackendSpec("journal_without_checksums", JournalWithoutChecksums),
            ss.BackendSpec("journal_early_ack", JournalAcknowledgingEarly),
            ss.BackendSpec("journal_after_torn_tail", JournalAppendingAfterATornTail),
        ]


CONTROLS = {
    # backend: a phrase at least one violation must contain
    "naive": "is unreadable",
    "no_temp_fsync": "is unreadable",
    "no_dir_fsync": "acknowledged write lost",
    "early_ack": "acknowledged write lost",
    "backup_not_synced": "is unreadable",
    "backup_name_not_synced": "is unreadable",
    "unsafe_recovery": "a crash during recovery",
    "restless_recovery": "a second opening changed the files",
    "fragile_recovery": "writing after recovery raised",
    "bypass": "bypassed the file-system object",
}


def control_workloads() -> list[Workload]:
    return standard_workloads(2 if DEEP else 1)


def run_control(backend: str) -> CrashReport:
    return check_crash_safety(
        backend,
        workloads=control_workloads(),
        plugins=[BrokenVariants],
        limits=Limits(recovery_crash_states=1000),
    )


@pytest.mark.parametrize("backend", CONTROLS)
def test_the_harness_catches_the_broken_variants(backend: str) -> None:
    report = run_control(backend)
    print(report.figures())
    assert report.violation_count > 0, f"{backend} passed: the harness has no teeth"
    assert any(CONTROLS[backend] in str(v) for v in report.violations), report.summary()


def test_a_durability_of_none_promises_no_acknowledged_write() -> None:
    """The early acknowledgement is legal when nothing was promised (but tears are not)."""
    report = check_crash_safety(
        "early_ack", workloads=control_workloads(), plugins=[BrokenVariants], durability="none"
    )
    assert not any("acknowledged write lost" in str(v) for v in report.violations)


QUICK_JOURNAL_CONTROL_LIMITS = {
    "journal_without_checksums": Limits(
        exhaustive_up_to=4, random_subsets=8, recovery_crash_states=0
    ),
    "journal_early_ack": Limits(torn_writes=False, recovery_crash_states=0),
    "journal_after_torn_tail": Limits(
        exhaustive_up_to=4, random_subsets=8, recovery_crash_states=0
    ),
}
JOURNAL_CONTROLS = {
    "journal_without_checksums": "",
    "journal_early_ack": "lost",
    "journal_after_torn_tail": "lost by the next crash",
}


if "journal" in SELECTED:

    @pytest.mark.parametrize("backend", JOURNAL_CONTROLS)
    def test_the_harness_catches_the_broken_journals(backend: str) -> None:
        steps = (Step("write", ("a",)), Step("transaction", ("a", "dir/b")))
        workload = Workload(steps[1:] if backend == "journal_early_ack" else steps)
        report = check_crash_safety(
            backend,
            workloads=[workload],
            plugins=[BrokenVariants],
            limits=LIMITS
            if DEEP
            else Limits(exhaustive_up_to=4, random_subsets=8, recovery_crash_states=0),
            publish_delay=None,
            preallocate_bytes=4096,
        )
        print(report.figures())
        print(report.summary(1))
        assert report.violation_count > 0, f"{backend} passed: the harness has no teeth"
        assert any(JOURNAL_CONTROLS[backend] in str(v) for v in report.violations)


# -- the extension point and the API ------------------------------------------------------
def write_pair(session: Session, step: Step) -> dict[str, Any]:
    """Claims one commit for writes that are not a transaction: the oracle must object."""
    changes = {key: session.new_value(key) for key in step.keys}
    for key, value in changes.items():
        session.store.write(key, value)
    return changes


def test_registered_ops_join_the_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPS, "pair", write_pair)
    pair = Step("pair", ("a", "dir/b"))
    workload = standard_workloads(1, extra=[pair])[-1]
    assert workload.steps == (pair,)
    report = check_crash_safety("atomic", workloads=[workload], limits=LIMITS)
    assert any("not a prefix of the commits" in str(v) for v in report.violations)


def test_the_api_refuses_what_it_cannot_crash() -> None:
    with pytest.raises(ValueError, match="no backend 'nowhere'"):
        check_crash_safety("nowhere")
    with pytest.raises(TypeError, match="no fs option"):
        check_crash_safety("memory")
    with pytest.raises(ValueError, match="unknown workload op"):
        check_crash_safety("atomic", workloads=[Workload((Step("frobnicate"),))])


def test_the_package_exports_the_harness() -> None:
    from storage_shim import testing  # noqa: PLC0415

    assert testing.check_crash_safety is check_crash_safety
    assert testing.SimFS is SimFS
