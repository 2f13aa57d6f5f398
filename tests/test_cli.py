"""The ``storage-shim`` command, called through ``main()`` (and once as ``python -m``)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

import storage_shim as ss
from storage_shim.cli import main

Feed = Callable[[bytes], None]
"""Puts the bytes on standard input."""

BUILTINS = ["atomic", "journal", "lockfile", "memory", "naive"]
QUESTIONS = [
    "torn reads possible?",
    "crash leaves old-or-new?",
    "acknowledged write durable?",
    "lost updates possible?",
    "transactions?",
]


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = main([os.fspath(a) if isinstance(a, Path) else str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Feed:
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))

    return feed


@pytest.fixture
def location(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def filled(location: Path) -> Path:
    with ss.open_store(location) as store:
        store.write("session/ses_1", {"title": "héllo", "n": [1, 2]})
        store.write("session/ses_2", {"title": "two"})
        store.write("session_diff/ses_1", [])
        store.write("config", {"theme": "dark"})
    return location


# -- backends -------------------------------------------------------------------------
def test_backends_prints_a_guarantee_table(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "backends")
    assert (status, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split("  ")[0] == "backend"
    for question in QUESTIONS:
        assert question in header
    table = {row.split()[0]: row.split()[1:6] for row in rows}
    assert sorted(table) == BUILTINS
    assert table["naive"] == ["yes", "no", "no", "yes", "no"]
    assert table["atomic"] == ["no", "yes", "yes", "no", "no"]
    assert table["journal"] == ["no", "yes", "yes", "no", "yes"]
    assert table["lockfile"] == ["no", "yes", "yes", "no", "no"]
    assert table["memory"] == ["no", "no", "no", "no", "no"]
    for name, spec in ss.backend_specs().items():
        assert spec.description in next(row for row in rows if row.startswith(name + " "))


def test_backends_json_derives_the_guarantees_from_the_capabilities(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "backends", "--json")
    assert status == 0
    listing = {entry["name"]: entry for entry in json.loads(out)}
    specs = ss.backend_specs()
    assert list(listing) == list(specs)
    for name, entry in listing.items():
        caps = specs[name].capabilities
        assert caps is not None
        assert entry["description"] == specs[name].description
        assert entry["capabilities"]["cross_process"] is caps.cross_process
        assert entry["guarantees"] == {
            "torn_reads_possible": not caps.atomic_reads,
            "crash_leaves_old_or_new": caps.crash_safe,
            "acknowledged_write_durable": caps.durable,
            "lost_updates_possible": caps.persistent and not caps.cross_process,
            "transactions": caps.transactions,
        }


PLUGIN_WITHOUT_CAPABILITIES = """
import storage_shim as ss
from storage_shim.backends import MemoryBackend


def make(location):
    return MemoryBackend(location)


@ss.hookimpl
def storage_shim_backends():
    return [ss.BackendSpec("mystery", make, "declares nothing")]
"""


@pytest.fixture
def installed_plugin_without_capabilities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    site = tmp_path / "site"
    dist = site / "ss_mystery-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ss-mystery\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[storage_shim]\nmystery = ss_mystery\n")
    (site / "ss_mystery.py").write_text(textwrap.dedent(PLUGIN_WITHOUT_CAPABILITIES))
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("ss_mystery", None)


@pytest.mark.usefixtures("installed_plugin_without_capabilities")
def test_a_plugin_backend_without_capabilities_shows_question_marks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "backends")
    assert status == 0
    row = next(line for line in out.splitlines() if line.startswith("mystery "))
    assert row.split()[1:5] == ["?"] * 4
    assert row.endswith("declares nothing")
    status, out, _ = run(capsys, "backends", "--json")
    entry = next(e for e in json.loads(out) if e["name"] == "mystery")
    assert entry["capabilities"] is None
    assert set(entry["guarantees"].values()) == {None}


# -- ls -------------------------------------------------------------------------------
def test_ls_prints_every_key_one_per_line(capsys: pytest.CaptureFixture[str], filled: Path) -> None:
    status, out, _ = run(capsys, "ls", filled)
    assert status == 0
    assert out == "config\nsession/ses_1\nsession/ses_2\nsession_diff/ses_1\n"


def test_ls_filters_by_a_prefix_of_whole_segments(
    capsys: pytest.CaptureFixture[str], filled: Path
) -> None:
    assert run(capsys, "ls", filled, "session")[1] == "session/ses_1\nsession/ses_2\n"
    assert run(capsys, "ls", filled, "session/ses_2")[1] == "session/ses_2\n"
    assert run(capsys, "ls", filled, "nothing") == (0, "", "")


def test_ls_of_an_empty_store_prints_nothing(
    capsys: pytest.CaptureFixture[str], location: Path
) -> None:
    location.mkdir()
    assert run(capsys, "ls", location) == (0, "", "")


# -- get ------------------------------------------------------------------------------
def test_get_prints_the_document_indented(capsys: pytest.CaptureFixture[str], filled: Path) -> None:
    status, out, _ = run(capsys, "get", filled, "session/ses_1")
    assert status == 0
    expected = {"title": "héllo", "n": [1, 2]}
    assert out == orjson.dumps(expected, option=orjson.OPT_INDENT_2).decode() + "\n"
    assert out.count("\n") > 2
    assert json.loads(out) == expected


def test_get_compact_prints_one_line(capsys: pytest.CaptureFixture[str], filled: Path) -> None:
    status, out, _ = run(capsys, "get", filled, "session/ses_1", "--compact")
    assert (status, out) == (0, '{"title":"héllo","n":[1,2]}\n')


def test_get_of_a_missing_key_fails_with_exit_status_1(
    capsys: pytest.CaptureFixture[str], filled: Path
) -> None:
    status, out, err = run(capsys, "get", filled, "session/ses_9")
    assert (status, out) == (1, "")
    assert err == "storage-shim: error: no document at key 'session/ses_9'\n"


def test_get_of_a_corrupt_document_names_it(
    capsys: pytest.CaptureFixture[str], filled: Path
) -> None:
    (filled / "config.json").write_bytes(b"")
    status, _, err = run(capsys, "get", filled, "config")
    assert status == 1
    assert err.startswith("storage-shim: error: corrupt document at ")
    assert "config.json: empty file (0 bytes)" in err
    assert (filled / "config.json").read_bytes() == b""


def test_reading_commands_do_not_create_a_missing_store(
    capsys: pytest.CaptureFixture[str], location: Path
) -> None:
    for argv in (["ls", location], ["get", location, "doc"], ["rm", location, "doc"]):
        status, _, err = run(capsys, *argv)
        assert status == 1
        assert err == f"storage-shim: error: no store at {os.fspath(location)!r}: not a directory\n"
    assert not location.exists()


# -- put ------------------------------------------------------------------------------
def test_put_stores_stdin_and_prints_the_receipt_on_one_line(
    capsys: pytest.CaptureFixture[str],
    stdin: Feed,
    location: Path,
) -> None:
    stdin('{"title": "ünïcode", "items": [1, 2.5, null, true]}\n'.encode())
    status, out, err = run(capsys, "put", location, "session/ses_1")
    assert (status, err) == (0, "")
    assert out.count("\n") == 1
    receipt = json.loads(out)
    assert receipt == {
        "key": "session/ses_1",
        "backend": "atomic",
        "bytes": len('{"title":"ünïcode","items":[1,2.5,null,true]}'.encode()),
        "durability": "fsync",
        "file_synced": True,
        "dir_synced": True,
        "durable": True,
        "retries": 0,
    }
    with ss.open_store(location) as store:
        assert store.read("session/ses_1") == {"title": "ünïcode", "items": [1, 2.5, None, True]}


def test_put_takes_the_backend_and_the_durability(
    capsys: pytest.CaptureFixture[str],
    stdin: Feed,
    location: Path,
) -> None:
    stdin(b"[1]")
    argv = ["put", location, "doc", "--backend", "lockfile", "--durability", "none"]
    status, out, _ = run(capsys, *argv)
    receipt = json.loads(out)
    assert status == 0
    assert (receipt["backend"], receipt["durability"]) == ("lockfile", "none")
    assert (receipt["file_synced"], receipt["dir_synced"], receipt["durable"]) == (False,) * 3
    assert (location / "doc.json").read_bytes() == b"[1]"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"title": "cut', "standard input is not valid JSON: "),
        (b"[1, 2] trailing", "standard input is not valid JSON: Extra data"),
        (b"{'single': 'quotes'}", "standard input is not valid JSON: "),
        (b"\xff\xfe\xfa", "standard input is not valid JSON: "),
        (b"[NaN]", "standard input is not valid JSON: NaN is not JSON"),
        (b'{"a": -Infinity}', "standard input is not valid JSON: -Infinity is not JSON"),
        (b"", "standard input is empty"),
        (b" \n", "standard input is empty"),
        (b'{"n": 18446744073709551616}', "cannot serialise value at $.n: integer outside"),
    ],
    ids=[
        "truncated",
        "trailing",
        "quotes",
        "not_utf8",
        "nan",
        "infinity",
        "empty",
        "blank",
        "2**64",
    ],
)
def test_put_refuses_what_is_not_json_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    stdin: Feed,
    filled: Path,
    data: bytes,
    message: str,
) -> None:
    before = sorted((p.relative_to(filled), p.read_bytes()) for p in filled.rglob("*.json"))
    stdin(data)
    status, out, err = run(capsys, "put", filled, "config")
    assert (status, out) == (1, "")
    assert err.startswith(f"storage-shim: error: {message}")
    assert err.count("\n") == 1
    after = sorted((p.relative_to(filled), p.read_bytes()) for p in filled.rglob("*.json"))
    assert after == before
    assert [p.name for p in filled.rglob("*.ss-tmp")] == []


def test_put_with_invalid_json_does_not_even_create_the_store(
    capsys: pytest.CaptureFixture[str],
    stdin: Feed,
    location: Path,
) -> None:
    stdin(b"{")
    assert run(capsys, "put", location, "doc")[0] == 1
    assert not location.exists()


# -- rm -------------------------------------------------------------------------------
def test_rm_removes_the_document(capsys: pytest.CaptureFixture[str], filled: Path) -> None:
    assert run(capsys, "rm", filled, "session/ses_1") == (0, "", "")
    assert not (filled / "session" / "ses_1.json").exists()
    assert run(capsys, "ls", filled, "session")[1] == "session/ses_2\n"


def test_rm_of_a_missing_document_fails_unless_forced(
    capsys: pytest.CaptureFixture[str], filled: Path
) -> None:
    status, _, err = run(capsys, "rm", filled, "session/ses_9")
    assert status == 1
    assert err == "storage-shim: error: no document at key 'session/ses_9'\n"
    assert run(capsys, "rm", filled, "session/ses_9", "--force") == (0, "", "")
    assert run(capsys, "rm", "-f", filled, "session/ses_9") == (0, "", "")


# -- errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["get", "{store}", "../escape"], "invalid key '../escape'"),
        (["get", "{store}", ".storage_shim/locks"], "invalid key '.storage_shim/locks'"),
        (["ls", "{store}", "a//b"], "invalid key 'a//b'"),
        (["rm", "{store}", "CON"], "invalid key 'CON'"),
        (
            ["ls", "{store}", "--backend", "nosuch"],
            "unknown backend 'nosuch'; registered backends:"
            " atomic, journal, lockfile, memory, naive",
        ),
    ],
    ids=["parent", "private", "empty_segment", "device", "unknown_backend"],
)
def test_storage_errors_exit_1_with_one_line_and_no_traceback(
    capsys: pytest.CaptureFixture[str], filled: Path, argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, *(a.format(store=filled) for a in argv))
    assert (status, out) == (1, "")
    assert err.startswith(f"storage-shim: error: {message}")
    assert err.count("\n") == 1


def test_a_store_location_that_is_a_file_is_a_storage_error(
    capsys: pytest.CaptureFixture[str],
    stdin: Feed,
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("x")
    stdin(b"1")
    status, _, err = run(capsys, "put", tmp_path / "file", "doc")
    assert status == 1
    assert err.startswith("storage-shim: error: ")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["get"],
        ["get", "somewhere"],
        ["put", "somewhere", "doc", "--durability", "sometimes"],
        ["ls", "somewhere", "--no-such-flag"],
    ],
    ids=["no_command", "unknown_command", "no_location", "no_key", "bad_durability", "bad_flag"],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith("usage: storage-shim")
    assert re.search(r"^storage-shim( [a-z]+)?: error: ", err, re.MULTILINE)
    assert not (tmp_path / "somewhere").exists()


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ["backends", "ls", "get", "put", "rm"]:
        assert command in out


# -- the module entry point -----------------------------------------------------------
def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    root = Path(ss.__file__).parent.parent
    paths = [str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    result = subprocess.run(
        [sys.executable, "-m", "storage_shim", "backends"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == BUILTINS
