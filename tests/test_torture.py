"""The torture, in real processes: naive tears and loses updates, the other backends do not.

And a writer killed with SIGKILL leaves every document old-or-new, with no
acknowledged write lost; and ``storage-shim torture`` reports all of it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import selected_backends

import storage_shim as ss
from storage_shim import cli
from storage_shim.torture import (
    GOOD,
    TORN,
    Result,
    TortureError,
    classify_read,
    intact_version,
    make_document,
    run_kill_rounds,
    run_torture,
    select_backends,
)
from storage_shim.torture.kill import judge
from storage_shim.torture.race import race_updates, watched

SPECS = ss.backend_specs()
SELECTED = [name for name in selected_backends() if name in SPECS]


def _promises(name: str, capability: str) -> bool:
    caps = SPECS[name].capabilities
    return caps is not None and bool(getattr(caps, capability))


RACED = [name for name in SELECTED if _promises(name, "persistent")]
SAFE = [name for name in RACED if _promises(name, "atomic_reads")]
CROSS_PROCESS = [name for name in RACED if _promises(name, "cross_process")]
CRASH_SAFE = [name for name in RACED if _promises(name, "crash_safe")]

SECONDS, SIZE, UPDATERS, UPDATES = 1.0, 300_000, 2, 200


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    status = cli.main(["torture", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


# -- the document and the verdict on one read ---------------------------------------
def test_a_document_is_about_the_size_asked_and_names_its_version() -> None:
    for size in (1_000, 300_000, 1_500_000):
        document = make_document(7, size)
        assert abs(len(orjson.dumps(document)) - size) < 100
        assert intact_version(document) == 7
    assert make_document(1, 5000)["body"] != make_document(2, 5000)["body"]


def test_a_mix_of_two_versions_or_a_cut_body_is_not_intact() -> None:
    old, new = make_document(1, 5000), make_document(2, 5000)
    half = len(old["body"]) // 2
    assert intact_version({**new, "body": new["body"][:half] + old["body"][half:]}) is None
    assert intact_version({**new, "body": new["body"][:-1]}) is None
    assert intact_version({**new, "version": 1}) == 1  # the version is not under the hash
    for damaged in ({**new, "extra": 1}, {**new, "version": True}, {"version": 2}, [new], None):
        assert intact_version(damaged) is None


def test_reads_are_judged_good_torn_or_by_the_error_type() -> None:
    document = make_document(3, 1000)

    def raising(exc: Exception) -> Any:
        raise exc

    corrupt = ss.CorruptDocumentError(("d",), "d.json", "truncated")
    assert classify_read(lambda: document) == (GOOD, 3)
    assert classify_read(lambda: raising(corrupt)) == (TORN, None)
    assert classify_read(lambda: {**document, "sha256": "0" * 64}) == (TORN, None)
    assert classify_read(lambda: [1, 2]) == (TORN, None)
    assert classify_read(lambda: raising(ss.NotFoundError(("d",)))) == ("NotFoundError", None)
    assert classify_read(lambda: raising(OSError(5, "EIO"))) == ("OSError", None)


def test_torn_files_read_through_the_library_are_counted_torn(tmp_path: Path) -> None:
    old, new = (orjson.dumps(make_document(v, 20_000)) for v in (10, 11))
    assert len(old) == len(new)
    path = tmp_path / "torture" / "document.json"
    with ss.open_store(tmp_path, backend="naive", read_retries=0) as store:
        store.write("torture/document", make_document(10, 20_000))
        read = functools.partial(store.read, "torture/document")
        assert classify_read(read) == (GOOD, 10)
        for torn in (new[: len(new) // 2], b"", new[:9000] + old[9000:]):
            path.write_bytes(torn)
            assert classify_read(read) == (TORN, None)


# -- what counts as a broken promise --------------------------------------------------
def fabricated(backend: str, **changes: Any) -> Result:
    clean = Result(
        backend=backend,
        capabilities=SPECS[backend].capabilities,
        document_bytes=1000,
        seconds=1.0,
        writes=10,
        write_errors={},
        reads=100,
        torn=0,
        read_errors={},
        versions_seen=5,
        reads_per_second=100.0,
        updaters=2,
        updates=20,
        acknowledged=20,
        final=20,
        update_errors={},
    )
    return replace(clean, **changes)


def test_only_promises_the_backend_declares_can_be_broken() -> None:
    assert fabricated("atomic").problems == ()
    assert fabricated("naive", torn=50, final=15, update_errors={"X": 1}).problems == ()
    assert fabricated("atomic", torn=2).problems == (
        "promises atomic reads, yet 2 of 100 reads were torn",
    )
    assert fabricated("atomic", final=19).problems == (
        "promises cross-process update(), yet 1 of 20 acknowledged increments were lost",
    )
    assert fabricated("lockfile", read_errors={"LockTimeoutError": 3}).problems == (
        "a read raised LockTimeoutError 3 time(s)",
    )
    assert fabricated("atomic", updaters=0, acknowledged=0, final=0).problems == ()
    undeclared = replace(fabricated("naive", torn=5, final=0), capabilities=None)
    assert undeclared.problems == ()
    assert fabricated("naive", final=15).lost == 5


def test_the_backends_raced_by_default_are_the_persistent_ones() -> None:
    chosen = [spec.name for spec in select_backends()]
    assert chosen == [n for n, s in SPECS.items() if s.capabilities and s.capabilities.persistent]
    assert "memory" not in chosen
    assert {"naive", "lockfile", "atomic"} <= set(chosen)
    assert [s.name for s in select_backends(["atomic", "naive", "atomic"])] == ["atomic", "naive"]
    with pytest.raises(ss.UnknownBackendError):
        select_backends(["nosuch"])
    with pytest.raises(TortureError, match="inside one process"):
        select_backends(["memory"])


# -- the race, in real processes --------------------------------------------------------
@pytest.fixture(scope="module")
def raced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    results = run_torture(
        RACED,
        seconds=SECONDS,
        size=SIZE,
        updaters=UPDATERS,
        updates=UPDATES,
        location=tmp_path_factory.mktemp("torture"),
    )
    assert [r.backend for r in results] == RACED
    return {r.backend: r for r in results}


@pytest.mark.slow
@pytest.mark.parametrize("backend", RACED)
def test_every_backend_was_really_raced(raced: dict[str, Result], backend: str) -> None:
    result = raced[backend]
    assert result.writes > 0
    assert result.reads >= 2  # each of the 2 readers reads at least once
    assert result.writes_per_second > 0
    assert result.reads_per_second > 0
    assert abs(result.document_bytes - SIZE) < 100
    assert result.updates == UPDATERS * UPDATES
    assert 0 <= result.final <= result.acknowledged <= result.updates


if "naive" in RACED:

    @pytest.mark.slow
    def test_naive_readers_see_torn_documents(raced: dict[str, Result]) -> None:
        """The harness has teeth: the in-place rewrite tears under the same race."""
        naive = raced["naive"]
        assert naive.torn > 0
        assert naive.problems == ()

    @pytest.mark.slow
    def test_naive_updaters_can_lose_updates(tmp_path: Path) -> None:
        """Two processes update()-ing one counter lose increments (stops at the first loss)."""
        losses = []
        for attempt in range(5):
            tallies, final = race_updates(
                os.fspath(tmp_path / str(attempt)),
                "naive",
                updaters=2,
                updates=500,
                durability="none",
                watch=lambda fraction: None,
            )
            losses.append(sum(t.acknowledged for t in tallies) - final)
            if losses[-1]:
                break
        assert losses[-1] > 0, losses


if SAFE:

    @pytest.mark.slow
    @pytest.mark.parametrize("backend", SAFE)
    def test_backends_promising_atomic_reads_never_tear(
        raced: dict[str, Result], backend: str
    ) -> None:
        result = raced[backend]
        assert (result.torn, result.read_errors, result.write_errors) == (0, {}, {})
        assert result.versions_seen >= 2  # the readers did see the writer's progress
        assert result.problems == ()


if CROSS_PROCESS:

    @pytest.mark.slow
    @pytest.mark.parametrize("backend", CROSS_PROCESS)
    def test_cross_process_backends_lose_no_update(raced: dict[str, Result], backend: str) -> None:
        result = raced[backend]
        assert result.final == result.acknowledged == UPDATERS * UPDATES
        assert (result.lost, result.update_errors) == (0, {})


@pytest.mark.slow
def test_a_location_gets_a_temporary_directory_removed_afterwards(tmp_path: Path) -> None:
    mine = tmp_path / "keep.txt"
    mine.write_text("mine")
    seen: list[tuple[str, float, list[str]]] = []

    def progress(what: str, fraction: float) -> None:
        seen.append((what, fraction, sorted(os.listdir(tmp_path))))

    backend = RACED[0]
    (result,) = run_torture(
        [backend], seconds=0.3, size=50_000, updates=20, location=tmp_path, progress=progress
    )
    assert result.writes > 0
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]
    assert mine.read_text() == "mine"
    during = {name for _, _, names in seen for name in names}
    assert any(name.startswith("storage-shim-torture-") for name in during)
    fractions = [fraction for _, fraction, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    assert {what for what, _, _ in seen} == {
        f"{backend}: 1 writer, 2 reader(s)",
        f"{backend}: 2 updater(s)",
    }


def test_a_failing_worker_is_a_torture_error_with_its_traceback() -> None:
    seen: list[float] = []
    with pytest.raises(TortureError, match="a worker process failed") as failure:
        watched([functools.partial(int, "not a number")], seen.append, lambda: 0.5, timeout=60)
    assert "ValueError: invalid literal for int()" in str(failure.value)


def test_a_missing_location_is_a_torture_error(tmp_path: Path) -> None:
    with pytest.raises(TortureError, match="no directory at"):
        run_torture(["atomic"], location=tmp_path / "missing")


# -- SIGKILL ----------------------------------------------------------------------------
def test_after_a_kill_a_document_must_be_whole_and_acknowledged_or_attempted() -> None:
    assert judge(0, 5, acknowledged=5, attempted=6) is None
    assert judge(0, 6, acknowledged=5, attempted=6) is None
    assert judge(0, "NotFoundError", acknowledged=None, attempted=1) is None
    assert judge(0, "NotFoundError", acknowledged=1, attempted=2) == "doc0: acknowledged v1 lost"
    assert judge(1, 4, acknowledged=5, attempted=6) == (
        "doc1: v4, neither acknowledged v5 nor attempted v6"
    )
    assert judge(2, 7, acknowledged=5, attempted=6) is not None
    assert judge(0, "torn", acknowledged=5, attempted=6) == (
        "doc0: torn (acknowledged v5, attempted v6)"
    )


if CRASH_SAFE and sys.platform != "win32":

    @pytest.mark.slow
    @pytest.mark.parametrize("backend", CRASH_SAFE)
    def test_a_killed_writer_leaves_old_or_new_and_loses_no_acknowledged_write(
        tmp_path: Path, backend: str
    ) -> None:
        report = run_kill_rounds(os.fspath(tmp_path), backend, rounds=20, seed=4)
        assert report.problems == []
        assert len(report.rounds) == 20
        assert sum(r.in_flight for r in report.rounds) > 0  # some kills landed inside a write
        last = report.rounds[-1]
        assert min(last.acknowledged.values()) > 1  # every document was rewritten
        assert all(isinstance(v, int) for v in last.found.values())


if "naive" in RACED and sys.platform != "win32":

    @pytest.mark.slow
    def test_a_killed_naive_writer_leaves_a_torn_document(tmp_path: Path) -> None:
        """The kill rounds have teeth: an in-place rewrite cut short is caught."""
        report = run_kill_rounds(
            os.fspath(tmp_path), "naive", rounds=100, seed=4, stop_at_first_problem=True
        )
        assert report.problems
        assert all("torn" in problem for problem in report.problems), report.problems


# -- the command ------------------------------------------------------------------------
@pytest.mark.slow
def test_the_command_prints_the_table_and_the_legend(capsys: pytest.CaptureFixture[str]) -> None:
    backends = [b for b in ("naive", "atomic") if b in RACED] or RACED[:1]
    argv = ["--seconds", "0.5", "--size", "300k", "--updates", "50"]
    status, out, err = run(capsys, *argv, *(f"--backend={b}" for b in backends))
    assert (status, err) == (0, "")
    header, *rows = out.split("\n\n")[0].splitlines()
    assert header.split() == [
        "backend",
        "reads",
        "torn",
        "errors",
        "reads/s",
        "writes/s",
        "updates",
        "lost",
        "verdict",
    ]
    table = {row.split()[0]: row.split() for row in rows}
    assert list(table) == backends
    legend = " ".join(out.split("\n\n")[1].split())
    assert "a 0.3 MB self-validating document" in legend
    assert "for 0.5 s while 2 processes read it" in legend
    assert "Then 2 processes each ran update() 50 times on one counter." in legend
    if "naive" in table:
        assert int(table["naive"][2]) > 0
        assert table["naive"][8] == "tears,"
        assert "The bug: naive rewrites the file in place" in legend
    if "atomic" in table:
        assert table["atomic"][2:4] == ["0", "0"]
        assert table["atomic"][6:9] == ["100", "0", "ok:"]
        assert "The fix: atomic promises atomic reads" in legend


@pytest.mark.slow
def test_the_command_prints_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    backend = RACED[0]
    argv = ["--backend", backend, "--seconds", "0.3", "--size", "20000", "--updaters", "0"]
    status, out, err = run(capsys, *argv, "--readers", "1", "--location", tmp_path, "--json")
    assert (status, err) == (0, "")
    report = json.loads(out)
    assert report["ok"] is True
    assert report["settings"] == {
        "seconds": 0.3,
        "readers": 1,
        "size": 20000,
        "updaters": 0,
        "updates": 300,
        "durability": "none",
    }
    (result,) = report["results"]
    assert result["backend"] == backend
    assert result["capabilities"]["persistent"] is True
    assert result["reads"] > 0
    assert result["writes"] > 0
    assert (result["updaters"], result["lost"], result["problems"]) == (0, None, [])
    assert os.listdir(tmp_path) == []


def test_a_broken_promise_exits_1_and_says_which(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = [fabricated("atomic", torn=3), fabricated("naive", torn=40, final=12)]
    monkeypatch.setattr(cli, "run_torture", lambda *args, **kwargs: results)
    status, out, err = run(capsys)
    assert status == 1
    rows = {line.split()[0]: line for line in out.splitlines()[1:3]}
    assert "FAILED: promises atomic reads, yet 3 of 100 reads were torn" in rows["atomic"]
    assert "tears, loses updates: unsafe, as it declares" in rows["naive"]
    assert (
        err
        == "storage-shim: torture: atomic: promises atomic reads, yet 3 of 100 reads were torn\n"
    )
    monkeypatch.setattr(cli, "run_torture", lambda *args, **kwargs: results[1:])
    assert run(capsys)[0] == 0


LIAR_PLUGIN = """
import storage_shim as ss
from storage_shim.backends.naive import NaiveBackend


class LiarBackend(NaiveBackend):
    capabilities = ss.Capabilities(
        atomic_reads=True, crash_safe=False, durable=False, cross_process=False
    )


@ss.hookimpl
def storage_shim_backends():
    return [ss.BackendSpec("liar", LiarBackend, "naive, claiming atomic reads")]
"""


@pytest.fixture
def installed_liar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A backend that tears while promising atomic reads, installed for worker processes too."""
    site = tmp_path / "site"
    dist = site / "ss_liar-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ss-liar\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[storage_shim]\nliar = ss_liar\n")
    (site / "ss_liar.py").write_text(textwrap.dedent(LIAR_PLUGIN))
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("ss_liar", None)


@pytest.mark.slow
@pytest.mark.usefixtures("installed_liar")
def test_a_backend_that_tears_while_promising_atomic_reads_fails_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--backend", "liar", "--seconds", "1", "--size", "300k", "--updaters", "0"]
    status, out, err = run(capsys, *argv)
    assert status == 1
    assert "FAILED: promises atomic reads, yet " in out
    assert err.startswith("storage-shim: torture: liar: promises atomic reads, yet ")
    assert err.endswith(" reads were torn\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "0"], "must be positive"),
        (["--seconds", "soon"], "not a number of seconds"),
        (["--readers", "0"], "must be at least 1"),
        (["--updaters", "-1"], "must be at least 0"),
        (["--updates", "0"], "must be at least 1"),
        (["--size", "big"], "not a size in bytes"),
        (["--size", "0"], "not a size in bytes"),
        (["--durability", "sometimes"], "invalid choice"),
        (["--backend"], "expected one argument"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out) == (2, "")
    assert err.startswith("usage: storage-shim torture")
    assert message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "nosuch"], "unknown backend 'nosuch'; registered backends: "),
        (["--backend", "memory"], "backend 'memory' keeps its documents inside one process"),
        (["--location", "/nonexistent/storage-shim"], "no directory at '/nonexistent/"),
    ],
)
def test_errors_exit_1_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run(capsys, *argv)
    assert (status, out) == (1, "")
    assert err.startswith(f"storage-shim: error: {message}")
    assert err.count("\n") == 1


def test_sizes_take_units() -> None:
    parser = cli.build_parser()
    for text, size in [("1500000", 1_500_000), ("300k", 300_000), ("1.5MB", 1_500_000)]:
        assert parser.parse_args(["torture", "--size", text]).size == size
    defaults = parser.parse_args(["torture"])
    assert (defaults.backends, defaults.progress, defaults.location) == (None, None, None)
