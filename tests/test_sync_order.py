"""The order of flushes that power-loss safety rests on, recorded through the file-system object.

Issue 4 enumerates the crash states these orders allow; until then these tests
are what fails if a backend skips or reorders an fsync.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

import storage_shim as ss
from storage_shim.fs import FileSystem

Call = tuple[str, str]


class Recorder(FileSystem):
    """Records the mutating calls of a write, by path."""

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}
        self.log: list[Call] = []

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        fd = super().open(path, flags, mode)
        self.paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        self.paths.pop(fd, None)
        super().close(fd)

    def write(self, fd: int, data: memoryview) -> int:
        self.log.append(("write", self.paths[fd]))
        return super().write(fd, data)

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        if fd in self.paths:
            self.log.append(("fsync", self.paths[fd]))
        super().fsync(fd, full=full, data_only=data_only)

    def fsync_dir(self, path: str, *, full: bool = False) -> bool:
        self.log.append(("fsync_dir", path))
        return super().fsync_dir(path, full=full)

    def replace(self, src: str, dst: str) -> None:
        self.log.append(("replace", dst))
        super().replace(src, dst)

    def unlink(self, path: str) -> None:
        self.log.append(("unlink", path))
        super().unlink(path)


def one_overwrite(root: Path, backend: str) -> list[Call]:
    fs = Recorder()
    with ss.open_store(root, backend=backend, fs=fs) as store:
        store.write("doc", {"v": 1})
        fs.log.clear()
        store.write("doc", {"v": 2})
    return fs.log


def test_atomic_flushes_the_data_before_the_rename_and_the_directory_after(tmp_path: Path) -> None:
    log = one_overwrite(tmp_path, "atomic")
    [(_, temp)] = [call for call in log if call[0] == "write"]
    assert log == [
        ("write", temp),
        ("fsync", temp),
        ("replace", str(tmp_path / "doc.json")),
        ("fsync_dir", str(tmp_path)),
    ]


def test_lockfile_flushes_the_backup_before_touching_the_document(tmp_path: Path) -> None:
    log = one_overwrite(tmp_path, "lockfile")
    doc = str(tmp_path / "doc.json")
    backup = str(tmp_path / ".storage_shim" / "backup" / "doc.json")
    backup_dir = os.path.dirname(backup)
    temp = log[0][1]
    assert log == [
        ("write", temp),
        ("fsync", temp),
        ("replace", backup),
        ("fsync_dir", backup_dir),
        ("write", doc),
        ("fsync", doc),
        ("unlink", backup),
        ("fsync_dir", backup_dir),
    ]


def test_naive_flushes_once_and_is_not_crash_safe(tmp_path: Path) -> None:
    doc = str(tmp_path / "doc.json")
    assert one_overwrite(tmp_path, "naive") == [("write", doc), ("fsync", doc)]


@pytest.mark.parametrize("backend", ["naive", "lockfile", "atomic"])
def test_durability_none_flushes_nothing(tmp_path: Path, backend: str) -> None:
    fs = Recorder()
    with ss.open_store(tmp_path, backend=backend, fs=fs, durability="none") as store:
        store.write("dir/doc", {"v": 1})
        store.write("dir/doc", {"v": 2})
        store.remove("dir/doc")
    assert [call for call in fs.log if call[0].startswith("fsync")] == []


def test_a_file_system_without_flock_fails_instead_of_leaving_a_lock_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with ss.open_store(tmp_path, backend="atomic", lock_timeout=1) as store:
        with pytest.raises(ss.StorageIOError) as info:
            store.update("doc", lambda n: n + 1, default=0)
    assert info.value.errno == errno.ENOSYS
    assert not (tmp_path / "doc.json").exists()
