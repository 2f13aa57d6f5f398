"""Behaviour specific to the file backends: layout, modes, identity, temp files, read retries."""

from __future__ import annotations

import os
import stat
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import storage_shim as ss
from storage_shim.backends import AtomicBackend, LockfileBackend
from storage_shim.backends.files import STATE_DIR, TEMP_MARKER
from storage_shim.fs import FileSystem

FILE_BACKENDS = ["naive", "lockfile", "atomic"]


def files_below(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_layout_is_the_apps_own(tmp_path: Path, backend: str) -> None:
    """An app's existing tree is read as is: adopting the library needs no migration."""
    (tmp_path / "session_diff").mkdir()
    (tmp_path / "session_diff" / "ses_1.json").write_bytes(b'{"diff": [1, 2]}')
    (tmp_path / "session_diff" / "notes.txt").write_text("not a document")
    with ss.open_store(tmp_path, backend=backend) as store:
        assert store.read(("session_diff", "ses_1")) == {"diff": [1, 2]}
        store.write(("session", "proj", "ses_2"), {"title": "t"})
        assert store.list() == [("session", "proj", "ses_2"), ("session_diff", "ses_1")]
    assert (tmp_path / "session" / "proj" / "ses_2.json").read_bytes() == b'{"title":"t"}'


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_a_write_leaves_no_temporary_file(tmp_path: Path, backend: str) -> None:
    with ss.open_store(tmp_path, backend=backend) as store:
        for i in range(3):
            store.write("a/b", {"i": i})
        store.update("a/b", lambda d: {"i": d["i"] + 1})
    leftovers = [f for f in files_below(tmp_path) if f.endswith(TEMP_MARKER)]
    assert leftovers == []
    backups = [f for f in files_below(tmp_path) if f.startswith(os.path.join(STATE_DIR, "backup"))]
    assert backups == []


def test_atomic_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_bytes(b"{}")
    target.chmod(0o600)
    with ss.open_store(tmp_path, backend="atomic") as store:
        store.write("secret", {"token": "t"})
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_new_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with ss.open_store(tmp_path, backend="atomic") as store:
            store.write("fresh", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.json").stat().st_mode) == 0o640


def test_atomic_replaces_the_file_and_lockfile_keeps_its_identity(tmp_path: Path) -> None:
    for backend, same_inode in [("atomic", False), ("lockfile", True)]:
        root = tmp_path / backend
        with ss.open_store(root, backend=backend) as store:
            store.write("doc", {"v": 1})
            link = root / "hardlink.json.txt"
            os.link(root / "doc.json", link)
            before = (root / "doc.json").stat().st_ino
            store.write("doc", {"v": 2, "pad": "x" * 1000})
            store.write("doc", {"v": 3})
            assert ((root / "doc.json").stat().st_ino == before) is same_inode
            # A hard link sees in-place rewrites only.
            assert (link.read_bytes() == b'{"v":3}') is same_inode


class Crash(BaseException):
    """A process dying: nothing after it runs, no cleanup either."""


class DieInTheDocumentWrite(FileSystem):
    def write(self, fd: int, data: memoryview) -> int:
        if len(data) > 1000:
            os.write(fd, data[: len(data) // 2])
            raise Crash
        return super().write(fd, data)


def crash_a_lockfile_rewrite(root: Path, key: tuple[str, ...]) -> None:
    """What a writer in another process leaves when it dies in the middle of a rewrite."""
    backend = LockfileBackend(root, fs=DieInTheDocumentWrite())
    backend._restore = lambda *args: None  # type: ignore[method-assign]
    backend._drop_backup = lambda *args: None  # type: ignore[method-assign]
    with pytest.raises(Crash):
        backend.write(key, b'{"v": 2, "pad": "' + b"x" * 5000 + b'"}')


def test_lockfile_puts_back_an_interrupted_rewrite_when_opened(tmp_path: Path) -> None:
    """A crash between backup and cleanup: the next open restores the previous bytes."""
    with ss.open_store(tmp_path, backend="lockfile") as store:
        store.write("doc", {"v": 1})
    crash_a_lockfile_rewrite(tmp_path, ("doc",))
    assert (tmp_path / "doc.json").read_bytes() != b'{"v":1}'  # torn on disk now
    with ss.open_store(tmp_path, backend="lockfile") as store:
        assert list(store.backend("lockfile").recover()) == []  # already done on open
        assert store.read("doc") == {"v": 1}
    assert not (tmp_path / STATE_DIR / "backup" / "doc.json").exists()


def test_lockfile_removes_a_new_document_whose_first_write_was_interrupted(tmp_path: Path) -> None:
    class CrashOnDocument(FileSystem):
        def write(self, fd: int, data: memoryview) -> int:
            if bytes(data[:2]) == b'{"':
                os.write(fd, data[:3])
                raise Crash
            return super().write(fd, data)

    backend = LockfileBackend(tmp_path, fs=CrashOnDocument())
    backend._restore = lambda *args: None  # type: ignore[method-assign]
    backend._drop_backup = lambda *args: None  # type: ignore[method-assign]
    with pytest.raises(Crash):
        backend.write(("new",), b'{"v": 1}')
    assert (tmp_path / "new.json").exists()
    with ss.open_store(tmp_path, backend="lockfile") as store:
        assert not store.exists("new")


def test_an_open_lockfile_store_repairs_a_dead_writers_document_on_use(tmp_path: Path) -> None:
    """Stores that were already open meet the backup too, not only stores opened later."""
    with ss.open_store(tmp_path, backend="lockfile", read_retries=0) as store:
        store.write("a", {"v": 1})
        store.write("b", {"v": 1})
        crash_a_lockfile_rewrite(tmp_path, ("a",))
        crash_a_lockfile_rewrite(tmp_path, ("b",))
        assert store.read("a") == {"v": 1}
        assert store.remove("b")
        new = LockfileBackend(tmp_path, fs=DieInTheDocumentWrite())
        new._restore = lambda *args: None  # type: ignore[method-assign]
        new._drop_backup = lambda *args: None  # type: ignore[method-assign]
        with pytest.raises(Crash):
            new.write(("c",), b'{"v": 2, "pad": "' + b"x" * 5000 + b'"}')
        assert store.list() == [("a",)]  # "c" never existed for anyone
    with ss.open_store(tmp_path, backend="lockfile") as store:
        assert store.list() == [("a",)]
        assert store.read("a") == {"v": 1}


def test_lockfile_recovery_of_a_new_document_in_a_new_directory(tmp_path: Path) -> None:
    """The writer died after its backup and before creating the directory: opening still works."""
    backend = LockfileBackend(tmp_path)
    backend._save_backup(("fresh", "doc"), None)
    with ss.open_store(tmp_path, backend="lockfile") as store:
        assert store.list() == []
        store.write("fresh/doc", 1)
        assert store.read("fresh/doc") == 1
    assert not (tmp_path / STATE_DIR / "backup" / "fresh" / "doc.json").exists()


class FlakyReads(FileSystem):
    """Returns a torn prefix for the first ``torn`` reads, as a file mid-rewrite would."""

    def __init__(self, torn: int) -> None:
        self.torn = torn
        self.reads = 0

    def read_file(self, path: str) -> bytes:
        data = super().read_file(path)
        if STATE_DIR in path:
            return data
        self.reads += 1
        return data[: len(data) // 2] if self.reads <= self.torn else data


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_reads_retry_a_torn_document_before_raising(tmp_path: Path, backend: str) -> None:
    with ss.open_store(tmp_path, backend=backend) as store:
        store.write("doc", {"v": list(range(50))})
    fs = FlakyReads(torn=2)
    with ss.open_store(tmp_path, backend=backend, fs=fs, read_retries=3) as store:
        assert store.read("doc") == {"v": list(range(50))}
    assert fs.reads == 3


def test_read_retries_are_bounded(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, backend="naive") as store:
        store.write("doc", {"v": list(range(50))})
    fs = FlakyReads(torn=100)
    with ss.open_store(tmp_path, backend="naive", fs=fs, read_retries=2) as store:
        with pytest.raises(ss.CorruptDocumentError) as info:
            store.read("doc")
    assert fs.reads == 3
    assert info.value.path == str(tmp_path / "doc.json")
    assert "invalid JSON" in info.value.reason


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_a_corrupt_document_is_never_replaced_by_a_default(tmp_path: Path, backend: str) -> None:
    (tmp_path / "cfg.json").write_bytes(b"\x00" * 64)
    with ss.open_store(tmp_path, backend=backend, read_retries=0) as store:
        with pytest.raises(ss.CorruptDocumentError, match="64 NUL bytes"):
            store.get("cfg", default={})
        with pytest.raises(ss.CorruptDocumentError):
            store.update("cfg", lambda d: d, default={})
    assert (tmp_path / "cfg.json").read_bytes() == b"\x00" * 64


def test_atomic_reads_take_no_lock_and_writes_do(tmp_path: Path) -> None:
    class CountingLocks(FileSystem):
        locks = 0

        def lock(self, path: str, timeout: float) -> AbstractContextManager[None]:
            self.locks += 1
            return super().lock(path, timeout)

    fs = CountingLocks()
    with ss.open_store(tmp_path, backend="atomic", fs=fs) as store:
        store.write("doc", 1)
        store.remove("doc")
        assert fs.locks == 2
        store.write("doc", 1)
        assert [store.read("doc"), store.exists("doc"), store.list()] == [1, True, [("doc",)]]
    assert fs.locks == 3


def test_lock_timeout_is_typed(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, backend="atomic", lock_timeout=0.05) as first:
        other = AtomicBackend(tmp_path, lock_timeout=0.05)
        with first.backend("atomic").lock(("doc",)):
            # A second backend object stands for another process: only the file lock excludes it.
            with pytest.raises(ss.LockTimeoutError) as info, other.lock(("doc",)):
                pass
    assert isinstance(info.value, TimeoutError)
    assert info.value.lock_path.endswith(os.path.join(STATE_DIR, "locks", "doc.lock"))


@pytest.mark.parametrize("backend", ["lockfile", "atomic"])
def test_a_symlink_planted_in_the_private_directory(tmp_path: Path, backend: str) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    outside.mkdir()
    bait = outside / f".doc.json.{'0' * 16}{TEMP_MARKER}"  # named like a backup's temporary file
    bait.write_bytes(b"someone else's")
    (root / STATE_DIR).mkdir(parents=True)
    (root / STATE_DIR / "locks").symlink_to(outside)
    (root / STATE_DIR / "backup").symlink_to(outside)
    if backend == "lockfile":
        with pytest.raises(ss.UnsafePathError):
            ss.open_store(root, backend=backend)  # recovery would scan the link
        (root / STATE_DIR / "backup").unlink()
        (root / STATE_DIR / "backup").mkdir()
        (root / STATE_DIR / "backup" / "doc.json").symlink_to(outside / "x")
    with ss.open_store(root, backend=backend) as store:
        with pytest.raises(ss.UnsafePathError):
            store.update("doc", lambda v: v + 1, default=0)
        if backend == "lockfile":
            with pytest.raises(ss.UnsafePathError):
                store.write("doc", 1)
    assert list(outside.iterdir()) == [bait]


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_list_does_not_follow_a_planted_directory_link(tmp_path: Path, backend: str) -> None:
    root, outside = tmp_path / "store", tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "secret_name.json").write_bytes(b"{}")
    (outside / "inner" / "deeper.json").write_bytes(b"{}")
    root.mkdir()
    (root / "ext").symlink_to(outside)
    with ss.open_store(root, backend=backend) as store:
        assert store.list() == []
        with pytest.raises(ss.UnsafePathError):
            store.list("ext")
        with pytest.raises(ss.UnsafePathError):
            store.list("ext/inner")


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_listing_walks_in_key_order(tmp_path: Path, backend: str) -> None:
    """The walk emits keys sorted, a document before the directory of the same name."""
    keys = [("b",), ("a", "z"), ("a-c",), ("a",), ("a.b",), ("a", "a", "x"), ("a", "a"), ("A",)]
    with ss.open_store(tmp_path, backend) as store:
        for key in keys:
            store.write(key, 1)
        assert list(store.backend(backend).list(())) == sorted(keys)
        assert store.list() == sorted(keys)
        assert store.list("a") == [("a",), ("a", "a"), ("a", "a", "x"), ("a", "z")]
