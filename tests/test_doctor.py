"""``storage-shim doctor``: it finds what crashes left, changes nothing, and --repair fixes it."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import storage_shim as ss
from storage_shim import doctor
from storage_shim.backends.files import QUARANTINE_AREA, STATE_DIR
from storage_shim.backends.lockfile import _BACKUP_AREA, _PRESENT
from storage_shim.cli import main
from storage_shim.fs import FileSystem

TEMP_NAME = ".{}.0123456789abcdef.ss-tmp"


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A store with one corrupt document, one stray temporary file and healthy documents."""
    root = tmp_path / "store"
    with ss.open_store(root, "atomic") as store:
        for i in range(20):
            store.write(("session", f"s{i}"), {"i": i})
    (root / "session" / "s3.json").write_bytes(b'{"i": 3, "tit')
    (root / "session" / TEMP_NAME.format("s4.json")).write_bytes(b"half a document")
    return root


def test_a_healthy_store_has_no_problems(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "atomic") as store:
        store.write("a/b", {"x": 1})
        store.update("a/c", lambda n: n + 1, default=0)
    diagnosis = doctor.diagnose(tmp_path)
    assert diagnosis.documents == 2
    assert diagnosis.problems == []
    assert main(["doctor", str(tmp_path)]) == 0


def test_doctor_reports_corrupt_documents_and_temporary_files_and_changes_nothing(
    damaged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(damaged)
    assert main(["doctor", str(damaged)]) == 1
    out = capsys.readouterr().out
    assert "corrupt_document" in out
    assert "session/s3.json" in out
    assert "temporary_file" in out
    assert "2 problems found" in out
    assert snapshot(damaged) == before


def test_repair_quarantines_keeps_the_bytes_and_sweeps(
    damaged: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", str(damaged), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out
    assert "quarantined" in out
    quarantined = list((damaged / STATE_DIR / QUARANTINE_AREA).rglob("s3.json"))
    assert [p.read_bytes() for p in quarantined] == [b'{"i": 3, "tit']
    assert quarantined[0].parent.name == "session"  # the key's path is kept below the time
    assert not (damaged / "session" / "s3.json").exists()
    assert not (damaged / "session" / TEMP_NAME.format("s4.json")).exists()
    with ss.open_store(damaged) as store:
        assert store.get("session/s3") is None
        assert store.read("session/s4") == {"i": 4}
        assert len(store.list("session")) == 19
    assert main(["doctor", str(damaged)]) == 0
    assert "1 corrupt documents kept" in capsys.readouterr().out


def test_json_output(damaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", str(damaged), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 20
    assert report["problems"] == 2
    kinds = {f["kind"]: f for f in report["findings"] if f["problem"]}
    assert kinds["corrupt_document"]["key"] == "session/s3"
    assert kinds["temporary_file"]["key"] == "session/s4"
    assert report["journal"] is None


def test_an_interrupted_lockfile_rewrite_is_restored_not_quarantined(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "lockfile") as store:
        store.write("cfg", {"theme": "dark"})
        backend = store.backend("lockfile")
        old = backend.read(("cfg",))
    backup = tmp_path / STATE_DIR / _BACKUP_AREA / "cfg.json"
    backup.parent.mkdir(parents=True, exist_ok=True)
    backup.write_bytes(_PRESENT + old)  # what a writer killed mid-rewrite leaves
    (tmp_path / "cfg.json").write_bytes(b'{"theme": "li')
    diagnosis = doctor.diagnose(tmp_path)
    assert [(f.kind, f.key) for f in diagnosis.problems] == [("interrupted_write", ("cfg",))]
    repaired = doctor.repair(tmp_path)
    assert repaired.problems == []
    assert any("lockfile" in what for what in repaired.repairs)
    assert not (tmp_path / STATE_DIR / QUARANTINE_AREA).exists()
    with ss.open_store(tmp_path, "lockfile") as store:
        assert store.read("cfg") == {"theme": "dark"}


def kill_journal_writer(root: Path) -> None:
    """A process commits to a journal and dies before publishing or checkpointing."""
    code = f"""
        import os, storage_shim as ss
        store = ss.open_store({str(root)!r}, "journal", publish_delay=3600)
        for i in range(5):
            store.write(("doc", str(i)), {{"i": i}})
        store.write(("doc", "0"), {{"i": "latest"}})
        os._exit(0)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True)


def test_an_unrecovered_journal_is_reported_and_read_through_its_log(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "journal") as store:
        store.write(("doc", "0"), {"i": 0})
    kill_journal_writer(tmp_path)
    before = snapshot(tmp_path)
    diagnosis = doctor.diagnose(tmp_path)
    assert snapshot(tmp_path) == before
    assert diagnosis.documents == 5  # four live only in the log, not yet published
    journal = diagnosis.journal
    assert journal is not None
    assert journal.commits == 6
    assert journal.needs_recovery
    assert [f.kind for f in diagnosis.problems] == ["journal"]
    repaired = doctor.repair(tmp_path)
    assert repaired.problems == []
    assert repaired.journal is not None
    assert repaired.journal.commits == 0
    assert json.loads((tmp_path / "doc" / "0.json").read_bytes()) == {"i": "latest"}


def test_a_torn_journal_tail_is_reported_and_repaired(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "journal") as store:
        store.write("a", 1)
    kill_journal_writer(tmp_path)
    segment = max((tmp_path / STATE_DIR / "journal").glob("*.log"))
    with segment.open("r+b") as log:
        data = log.read()
        end = len(data.rstrip(b"\0"))
        log.seek(end - 5)
        log.write(b"\xff" * 5)  # the last commit's bytes never fully reached the disk
    diagnosis = doctor.diagnose(tmp_path)
    assert diagnosis.journal is not None
    assert diagnosis.journal.torn
    assert diagnosis.journal.commits == 5
    assert doctor.repair(tmp_path).problems == []
    with ss.open_store(tmp_path, "journal") as store:
        assert store.read("doc/0") == {"i": 0}  # the torn rewrite never committed


def test_a_corrupt_document_in_a_journal_store_is_quarantined_through_the_log(
    tmp_path: Path,
) -> None:
    with ss.open_store(tmp_path, "journal") as store:
        store.write("a", 1)
        store.write("b", 2)
    (tmp_path / "b.json").write_bytes(b"\x00" * 8)
    assert [f.key for f in doctor.diagnose(tmp_path).problems] == [("b",)]
    repaired = doctor.repair(tmp_path)
    assert repaired.problems == []
    with ss.open_store(tmp_path, "journal") as store:
        assert store.list() == [("a",)]


def test_doctor_on_a_missing_directory_fails_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    assert main(["doctor", str(missing)]) == 1
    assert "no store directory" in capsys.readouterr().err
    assert not missing.exists()


def test_an_unreadable_document_is_a_problem(tmp_path: Path) -> None:
    class Forbidden(FileSystem):
        def open(self, path: str, flags: int, mode: int = 0o666) -> int:
            if path.endswith("x.json"):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return super().open(path, flags, mode)

    (tmp_path / "x.json").write_bytes(b"1")
    (tmp_path / "y.json").write_bytes(b"2")
    diagnosis = doctor.diagnose(tmp_path, fs=Forbidden())
    assert diagnosis.documents == 2
    assert [(f.kind, f.key) for f in diagnosis.problems] == [("unreadable_document", ("x",))]
    assert "Permission denied" in diagnosis.problems[0].detail


def test_a_store_that_keeps_no_files_is_read_through_its_backend() -> None:
    diagnosis = doctor.diagnose("anywhere", "memory")
    assert diagnosis.documents == 0
    assert diagnosis.problems == []


def test_a_store_without_the_journal_still_replays_its_log_first(tmp_path: Path) -> None:
    """A plugin routed keys to the journal, the process died, the plugin is gone."""
    with ss.open_store(tmp_path, "journal") as store:
        store.write(("doc", "0"), {"i": "old"})
    kill_journal_writer(tmp_path)
    assert json.loads((tmp_path / "doc" / "0.json").read_bytes()) == {"i": "old"}
    with ss.open_store(tmp_path, "atomic") as store:
        assert store.read("doc/0") == {"i": "latest"}
        assert store.read("doc/4") == {"i": 4}
        store.write(("doc", "0"), {"i": "newest"})
    with ss.open_store(tmp_path, "journal") as store:  # nothing old is replayed over it
        assert store.read("doc/0") == {"i": "newest"}
    assert doctor.diagnose(tmp_path).problems == []


def test_repair_keeps_a_newer_document_that_a_stale_lockfile_backup_replaces(
    tmp_path: Path,
) -> None:
    """A lockfile rewrite died; later another backend wrote the key again."""
    with ss.open_store(tmp_path, "lockfile") as store:
        store.write("cfg", {"v": 1})
        old = store.backend("lockfile").read(("cfg",))
    backup = tmp_path / STATE_DIR / _BACKUP_AREA / "cfg.json"
    backup.parent.mkdir(parents=True, exist_ok=True)
    backup.write_bytes(_PRESENT + old)
    with ss.open_store(tmp_path, "atomic") as store:
        store.write("cfg", {"v": 7})
    repaired = doctor.repair(tmp_path)
    assert repaired.problems == []
    kept = [p.read_bytes() for p in (tmp_path / STATE_DIR / QUARANTINE_AREA).rglob("cfg.json")]
    assert [json.loads(k) for k in kept] == [{"v": 7}]
    with ss.open_store(tmp_path, "lockfile") as store:
        assert store.read("cfg") == {"v": 1}  # old-or-new: the backup's version, as promised


def test_files_written_by_pythons_json_are_documents_not_corruption(tmp_path: Path) -> None:
    (tmp_path / "nan.json").write_text(json.dumps({"x": float("nan")}))
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + b'{"x": 1}')
    assert doctor.diagnose(tmp_path).problems == []
    assert doctor.repair(tmp_path).repairs == []


def test_a_live_journal_refuses_inspection(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "journal") as store:
        store.write("a", 1)
        with pytest.raises(ss.UnsupportedOperationError):
            store.backend("journal").inspect()  # type: ignore[attr-defined]
        assert store.read("a") == 1
