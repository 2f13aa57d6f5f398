"""The bench harness runs and reports: a smoke run of a few cells, checked for shape, not speed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys

import orjson
import pytest

from storage_shim.bench import report as output
from storage_shim.bench.baselines import TinydbSubject
from storage_shim.bench.cli import add_bench_command
from storage_shim.bench.results import CellResult, Report, Row
from storage_shim.bench.runner import QUICK, run_bench
from storage_shim.bench.subjects import RAW_READ, RAW_REPLACE
from storage_shim.bench.targets import CELL_TARGETS, judge
from storage_shim.bench.timing import Sample
from storage_shim.bench.workloads import SMALL, Cell


def quick(*only: str) -> Report:
    return run_bench(dataclasses.replace(QUICK, only=only, rounds=2, seconds=0.01))


@pytest.fixture(scope="module")
def small_run() -> Report:
    return quick("write/2KB/1t/fsync/atomic$", "read/2KB/1t/journal$")


def test_only_the_selected_cells_run_with_their_baselines(small_run: Report) -> None:
    assert [r.cell.id for r in small_run.cells] == ["write/2KB/1t/fsync", "read/2KB/1t"]
    write, read = small_run.cells
    assert {row.subject for row in write.rows} == {"atomic", RAW_REPLACE}
    assert {row.subject for row in read.rows} == {"journal", RAW_READ}
    assert small_run.figures == []
    assert small_run.curves == []


def test_every_row_has_a_sample_per_round(small_run: Report) -> None:
    for result in small_run.cells:
        for row in result.rows:
            assert row.note is None
            assert len(row.samples) == 2
            assert all(s.ops >= 1 and s.seconds > 0 for s in row.samples)
            assert row.rate is not None
            assert row.rate > 0


def test_the_targets_of_the_selected_subjects_are_judged(small_run: Report) -> None:
    verdicts = {v.name: v for v in small_run.verdicts}
    for name in ("atomic durable write of 2 KB", "journal read of 2 KB"):
        assert verdicts[name].measured is not None
        assert verdicts[name].met is not None  # judged; which way depends on the machine
        assert verdicts[name].status.split(" (")[0] in {"met", "MISSED"}
    assert verdicts["journal durable writes, 8 threads"].status == "not measured"


def test_outputs_hold_every_cell(small_run: Report) -> None:
    text = output.as_text(small_run)
    markdown = output.as_markdown(small_run)
    as_json = orjson.loads(orjson.dumps(output.as_json(small_run)))
    for result in small_run.cells:
        assert result.cell.title in text
        assert f"`{result.cell.id}`" in markdown
    assert [c["id"] for c in as_json["cells"]] == ["write/2KB/1t/fsync", "read/2KB/1t"]
    baseline = next(r for r in as_json["cells"][0]["rows"] if r["subject"] == RAW_REPLACE)
    assert baseline["vs_baseline"] == pytest.approx(1.0)
    assert "atomic durable write of 2 KB" in text


def test_a_missing_library_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TinydbSubject, "requires", "storage_shim_no_such_module")
    result = quick("read/2KB/1t/tinydb")
    (cell,) = result.cells
    row = next(row for row in cell.rows if row.subject == "tinydb")
    assert row.note is not None
    assert row.note.startswith("not installed")
    assert "not installed" in output.as_text(result)


@pytest.mark.slow
def test_update_from_processes_loses_nothing() -> None:
    result = quick("update/2KB/4p/none/atomic$")
    (cell,) = result.cells
    assert {row.subject for row in cell.rows} == {"atomic", "sqlite3:wal-normal"}
    assert all(row.rate for row in cell.rows)
    assert cell.notes == []  # each counter equals the update()s acknowledged


def test_the_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="storage-shim")
    add_bench_command(parser.add_subparsers())
    args = parser.parse_args(["bench", "--quick", "--only", "scale/memory", "--json", "-"])
    assert args.run(args) == 0
    found = orjson.loads(capsys.readouterr().out)
    assert found["cells"] == []
    ids = {figure["id"] for figure in found["figures"]}
    assert ids == {"scale/memory-atomic", "scale/memory-journal"}
    assert all(figure["value"] > 0 for figure in found["figures"])


def test_the_document_section_is_replaced_between_markers() -> None:
    text = f"intro\n{output.DOC_BEGIN}\nold\n{output.DOC_END}\nend\n"
    assert output.update_document(text, "new") == (
        f"intro\n{output.DOC_BEGIN}\nnew\n{output.DOC_END}\nend\n"
    )
    with pytest.raises(ValueError, match="markers"):
        output.update_document("no markers", "new")


def test_importing_the_library_leaves_the_bench_out() -> None:
    code = "import sys, storage_shim; print('storage_shim.bench' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "False"


def _cell_result(subject: list[float], reference: list[float]) -> CellResult:
    cell = Cell("write", SMALL, 1, "fsync")
    rows = [
        Row("atomic", "backend", [Sample(int(r), 1.0) for r in subject]),
        Row(RAW_REPLACE, "raw", [Sample(int(r), 1.0) for r in reference]),
    ]
    return CellResult(cell, RAW_REPLACE, rows)


def test_ratios_pair_the_rounds() -> None:
    # A slow second round slows both: paired, the subject is always 0.5x.
    result = _cell_result([100, 10, 100], [200, 20, 200])
    assert result.speeds("atomic", RAW_REPLACE) == [0.5, 0.5, 0.5]
    assert result.speed("atomic", RAW_REPLACE) == 0.5


def test_a_verdict_says_when_rounds_disagree() -> None:
    (target,) = [t for t in CELL_TARGETS if t.name == "atomic durable write of 2 KB"]
    clear = judge(target, _cell_result([100, 100, 100], [200, 200, 200]))
    assert clear.measured == pytest.approx(2.0)
    assert clear.status == "MISSED"
    split = judge(target, _cell_result([100, 100, 100], [105, 200, 108]))
    assert split.measured == pytest.approx(1.08)
    assert split.met is True
    assert split.status == "met (rounds disagree)"
    assert judge(target, None).status == "not measured"
