"""``storage-shim migrate``: each document arrives byte for byte, verified; a re-run finishes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import storage_shim as ss
from storage_shim.cli import main
from storage_shim.fs import FileSystem
from storage_shim.migrate import migrate

HAND_WRITTEN = b'{\n  "title": "written by json.dump",\n  "n": 1\n}\n'


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    with ss.open_store(root, "atomic", durability="none") as store:
        for i in range(300):
            store.write(("message", f"m{i:03}"), {"i": i, "text": "x" * (i % 50)})
        store.write(("session", "big"), {"blob": "y" * 3_000_000})
    (root / "config.json").write_bytes(HAND_WRITTEN)
    return root


@pytest.mark.parametrize("backend", ["journal", "lockfile", "atomic"])
def test_every_document_arrives_byte_for_byte(source: Path, tmp_path: Path, backend: str) -> None:
    destination = tmp_path / "destination"
    result = migrate(source, destination, to_backend=backend)
    assert result.ok
    assert (result.documents, result.copied, result.unchanged) == (302, 302, 0)
    with ss.open_store(source) as src, ss.open_store(destination, backend) as dst:
        assert dst.list() == src.list()
        for key in src.list():
            assert dst.backend(backend).read(key) == src.backend("atomic").read(key)
    assert (destination / "config.json").read_bytes() == HAND_WRITTEN


class FailingAfter(FileSystem):
    """A disk that fills up after ``budget`` more files were created."""

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.budget = budget

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        if path.endswith(".ss-tmp"):
            if self.budget == 0:
                raise OSError(errno.ENOSPC, "No space left on device", path)
            self.budget -= 1
        return super().open(path, flags, mode)


def test_an_interrupted_migration_is_finished_by_running_it_again(
    source: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "destination"
    with pytest.raises(ss.StorageIOError) as info:
        migrate(source, destination, fs=FailingAfter(120))
    assert info.value.errno == errno.ENOSPC
    with ss.open_store(destination) as store:
        assert len(store.list()) == 120
    result = migrate(source, destination)
    assert result.ok
    assert (result.copied, result.unchanged) == (302 - 120, 120)


def test_a_corrupt_source_document_is_reported_and_not_copied(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (source / "message" / "m007.json").write_bytes(b'{"i": 7, "te')
    destination = tmp_path / "destination"
    assert main(["migrate", str(source), str(destination), "--to-backend", "journal"]) == 1
    out = capsys.readouterr().out
    assert "1 corrupt in the source, not copied" in out
    assert "message/m007" in out
    with ss.open_store(destination, "journal") as store:
        assert len(store.list()) == 301
        assert store.get("message/m007") is None


def test_a_document_changed_during_the_copy_fails_verification(
    source: Path, tmp_path: Path
) -> None:
    def change_the_source(what: str, fraction: float) -> None:
        if what.startswith("verifying") and not changed:
            changed.append(True)
            with ss.open_store(source) as store:
                store.write("message/m100", {"changed": True})

    changed: list[bool] = []
    result = migrate(source, tmp_path / "destination", progress=change_the_source)
    assert result.mismatched == ["message/m100"]
    assert not result.ok
    again = migrate(source, tmp_path / "destination")
    assert again.ok
    assert (again.copied, again.unchanged) == (1, 301)


def test_the_cli_reports_json_and_refuses_one_store_to_itself(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    destination = tmp_path / "destination"
    assert main(["migrate", str(source), str(destination), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["verified"] == 302
    assert main(["migrate", str(source), str(destination), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] == 302
    with pytest.raises(ValueError, match="the same store"):
        migrate(source, source)


def test_init_creates_the_store_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "new"), "--backend", "journal"]) == 0
    assert "ready (journal)" in capsys.readouterr().out
    assert (tmp_path / "new" / ".storage_shim" / "journal").is_dir()


def test_backend_options_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location = str(tmp_path / "new")
    assert main(["init", location, "--backend", "journal", "-o", "publish_delay=null"]) == 0
    assert main(["init", location, "-o", "lock_timeout=2.5", "--option", "fs_typo=1"]) == 1
    assert "fs_typo accepted by none of the backends atomic" in capsys.readouterr().err
    assert main(["init", location, "-o", "not an option"]) == 2


def test_options_for_one_side_only(source: Path, tmp_path: Path) -> None:
    destination = str(tmp_path / "destination")
    argv = ["migrate", str(source), destination, "--to-backend", "journal"]
    assert main([*argv, "-o", "publish_delay=null"]) == 1  # atomic, the source, refuses it
    assert main([*argv, "--to-option", "publish_delay=null", "--progress"]) == 0


def test_a_missing_source_is_refused_and_extra_documents_are_named(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ss.StorageIOError, match="no store to migrate from"):
        migrate(tmp_path / "typo", tmp_path / "destination")
    assert not (tmp_path / "typo").exists()
    destination = tmp_path / "destination"
    with ss.open_store(destination) as store:
        store.write("only/here", 1)
    assert main(["migrate", str(source), str(destination)]) == 0
    assert "1 in DEST only, kept (not in SOURCE): only/here" in capsys.readouterr().out
