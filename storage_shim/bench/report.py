"""The bench's outputs: a text table, Markdown for docs/performance.md, and JSON."""

from __future__ import annotations

from typing import Any

from .results import CellResult, Curve, Figure, Report, Row, Verdict
from .targets import judge, targets_of

DOC_BEGIN = "<!-- bench:begin -->"
DOC_END = "<!-- bench:end -->"


def _rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}" if rate >= 10 else f"{rate:.2f}"


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _spread(row: Row) -> str:
    """Half the range of the rounds' rates, relative to their median: the noise of the figure."""
    rates = [s.rate for s in row.samples]
    if len(rates) < 2 or not row.rate:
        return "-"
    return f"±{50 * (max(rates) - min(rates)) / row.rate:.0f}%"


def _target(result: CellResult, row: Row) -> str:
    marks = []
    for target in targets_of(result, row.subject):
        verdict = judge(target, result)
        if verdict.measured is None:
            continue
        bound = "time <=" if target.cost else ">="
        limit = f"{target.limit:.2f}x {target.reference}"
        marks.append(f"{verdict.shown} ({bound} {limit}): {verdict.status}")
    return "; ".join(marks)


def cell_rows(result: CellResult) -> list[list[str]]:
    """The cells of :data:`HEADER`, one list per subject."""
    rows = []
    for row in result.rows:
        rate = row.rate
        if rate is None:
            rows.append([row.subject, "-", "-", "-", "-", "-", row.note or "no sample"])
            continue
        megabytes = rate * result.cell.bytes_per_op / 1e6
        speed = result.speed(row.subject, result.baseline)
        shown = "-" if speed is None else f"{speed:.2f}x"
        rows.append(
            [
                row.subject,
                _rate(rate),
                _spread(row),
                _duration(result.cell.parallel / rate),
                f"{megabytes:,.1f}",
                shown,
                _target(result, row),
            ]
        )
    return rows


HEADER = ["subject", "ops/s", "spread", "latency", "MB/s", "vs baseline", "target"]


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = {1, 2, 3, 4, 5}
    return [
        "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _figure_value(figure: Figure) -> str:
    if figure.value is None:
        return figure.note or "-"
    value = f"{figure.value:,.0f}" if figure.value >= 100 else f"{figure.value:.3g}"
    return f"{value} {figure.unit}"


def _figure_reference(figure: Figure) -> str:
    if figure.reference is None:
        return ""
    ratio = f" ({figure.ratio:.2f}x)" if figure.ratio is not None else ""
    return f"{figure.reference_title}: {figure.reference:,.1f} {figure.unit}{ratio}"


def _detail(figure: Figure) -> str:
    return "; ".join(f"{k}: {v}" for k, v in figure.detail.items())


def as_text(report: Report) -> str:
    lines = [_machine_line(report), ""]
    for result in report.cells:
        lines.append(f"{result.cell.title}  [{result.cell.id}]  baseline: {result.baseline}")
        lines += ["  " + line for line in _align([HEADER, *cell_rows(result)])]
        lines += [f"  note: {note}" for note in result.notes]
        lines.append("")
    if report.figures:
        lines.append("Scale figures")
        rows = [["figure", "value", "compared to", "detail"]]
        rows += [
            [f.title, _figure_value(f), _figure_reference(f), _detail(f)] for f in report.figures
        ]
        lines += ["  " + line for line in _align_plain(rows)]
        lines.append("")
    for curve in report.curves:
        lines.append(f"{curve.title} ({curve.y_label})")
        rows = [["", *curve.points]] + [
            [name, *(f"{v:,.2f}" for v in values)] for name, values in curve.series.items()
        ]
        lines += ["  " + line for line in _align_plain(rows)]
        lines.append("")
    lines.append("Targets")
    rows = [["target", "goal", "measured", "status"]]
    rows += [[v.name, v.goal, v.shown, v.status] for v in report.verdicts]
    lines += ["  " + line for line in _align_plain(rows)]
    return "\n".join(lines) + "\n"


def _align_plain(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _machine_line(report: Report) -> str:
    m = report.machine
    return (
        f"storage_shim {m['storage_shim']}, Python {m['python']}, {m['platform']},"
        f" {m['cpus']} CPUs, {m['file_system']}, SQLite {m['sqlite']}, load {m['load_average']};"
        f" median of {report.settings['rounds']} interleaved rounds"
        f" of {report.settings['seconds']} s"
    )


# -- Markdown ------------------------------------------------------------
def _md_table(rows: list[list[str]]) -> list[str]:
    escape = [[c.replace("|", "\\|") for c in row] for row in rows]
    return [
        "| " + " | ".join(escape[0]) + " |",
        "|" + "|".join("---" for _ in escape[0]) + "|",
        *("| " + " | ".join(row) + " |" for row in escape[1:]),
    ]


def _mermaid(curve: Curve) -> list[str]:
    labels = ", ".join(f'"{p}"' for p in curve.points)
    lines = [
        "```mermaid",
        "xychart-beta",
        f'    title "{curve.title}"',
        f'    x-axis "{curve.x_label}" [{labels}]',
        f'    y-axis "{curve.y_label}"',
    ]
    lines += [
        f"    line [{', '.join(f'{v:.4g}' for v in values)}]" for values in curve.series.values()
    ]
    lines.append("```")
    return lines


def as_markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"Run of {m['date']}: {_machine_line(report)}; load average after the run"
        f" {m.get('load_average_after')}.",
        "",
        "### Targets",
        "",
        *_md_table(
            [["target", "goal", "measured", "status"]]
            + [[v.name, v.goal, v.shown, v.status] for v in report.verdicts]
        ),
        "",
        "### Throughput",
        "",
    ]
    for result in report.cells:
        lines += [f"**{result.cell.title}** (`{result.cell.id}`, baseline `{result.baseline}`)", ""]
        lines += _md_table([HEADER, *cell_rows(result)])
        lines += [f"\n{note}" for note in result.notes]
        lines.append("")
    if report.figures:
        lines += ["### Scale figures", ""]
        lines += _md_table(
            [["figure", "value", "compared to", "detail"]]
            + [
                [f.title, _figure_value(f), _figure_reference(f), _detail(f)]
                for f in report.figures
            ]
        )
        lines.append("")
    if report.curves:
        lines += ["### Curves", ""]
    for curve in report.curves:
        names = list(curve.series)
        lines += [f"**{curve.title}** ({curve.y_label}; lines in order: {', '.join(names)})", ""]
        lines += _mermaid(curve)
        lines.append("")
        lines += _md_table(
            [[curve.x_label, *names]]
            + [
                [point, *(f"{curve.series[n][i]:,.2f}" for n in names)]
                for i, point in enumerate(curve.points)
            ]
        )
        lines.append("")
    return "\n".join(lines)


def update_document(text: str, markdown: str) -> str:
    """Replace what lies between the bench markers of ``text`` with ``markdown``."""
    begin, end = text.find(DOC_BEGIN), text.find(DOC_END)
    if begin < 0 or end < begin:
        raise ValueError(f"no {DOC_BEGIN} ... {DOC_END} markers in the document")
    return text[: begin + len(DOC_BEGIN)] + "\n" + markdown.rstrip() + "\n" + text[end:]


# -- JSON ------------------------------------------------------------
def _verdict(v: Verdict) -> dict[str, Any]:
    return {
        "name": v.name,
        "goal": v.goal,
        "measured": v.measured,
        "status": v.status,
        "met": v.met,
        "rounds_disagree": v.rounds_disagree,
        "cell": v.detail or None,
    }


def as_json(report: Report) -> dict[str, Any]:
    return {
        "machine": report.machine,
        "settings": report.settings,
        "cells": [
            {
                "id": r.cell.id,
                "title": r.cell.title,
                "workload": r.cell.workload,
                "bytes": r.cell.size,
                "parallel": r.cell.parallel,
                "durability": r.cell.durability,
                "baseline": r.baseline,
                "notes": r.notes,
                "rows": [
                    {
                        "subject": row.subject,
                        "kind": row.kind,
                        "ops_per_second": row.rate,
                        "vs_baseline": r.speed(row.subject, r.baseline),
                        "note": row.note,
                        "rounds": [[s.ops, s.seconds] for s in row.samples],
                    }
                    for row in r.rows
                ],
            }
            for r in report.cells
        ],
        "figures": [
            {
                "id": f.id,
                "title": f.title,
                "value": f.value,
                "unit": f.unit,
                "reference": f.reference,
                "reference_title": f.reference_title,
                "ratio": f.ratio,
                "note": f.note,
                "detail": f.detail,
            }
            for f in report.figures
        ],
        "curves": [
            {
                "id": c.id,
                "title": c.title,
                "x": c.x_label,
                "y": c.y_label,
                "points": c.points,
                "series": c.series,
            }
            for c in report.curves
        ],
        "targets": [_verdict(v) for v in report.verdicts],
    }
