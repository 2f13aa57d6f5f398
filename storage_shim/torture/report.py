"""The torture's results as a table with its legend, or as JSON."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backend import Capabilities
from .runner import Result

WIDTH = 88
HEADERS = [
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


@dataclass(frozen=True)
class Settings:
    seconds: float
    readers: int
    size: int
    updaters: int
    updates: int
    durability: str


def _mb(size: float) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"


def verdict(result: Result) -> str:
    caps = result.capabilities
    if result.problems:
        return "FAILED: " + "; ".join(result.problems)
    if caps is None:
        return "declares no promises"
    shown = []
    if not caps.atomic_reads:
        shown.append("tears" if result.torn else "no tear caught this time")
    if not caps.cross_process and result.updaters:
        shown.append("loses updates" if result.lost else "no update lost this time")
    if shown:
        return f"{', '.join(shown)}: unsafe, as it declares"
    return "ok: as promised"


def rows(results: list[Result]) -> list[list[str]]:
    """The table, numbers aligned right; the verdict last."""
    table = [HEADERS]
    for r in results:
        counted = bool(r.updaters)
        table.append(
            [
                r.backend,
                str(r.reads),
                str(r.torn),
                str(r.errors),
                f"{r.reads_per_second:.0f}",
                f"{r.writes_per_second:.0f}",
                str(r.acknowledged) if counted else "-",
                str(r.lost) if counted else "-",
                verdict(r),
            ]
        )
    for column in range(1, len(HEADERS) - 1):
        width = max(len(row[column]) for row in table)
        for row in table:
            row[column] = row[column].rjust(width)
    return table


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith('s') else 's'}"


def _names(results: list[Result], test: Callable[[Capabilities], bool]) -> list[str]:
    return [r.backend for r in results if r.capabilities and test(r.capabilities)]


def _which(names: list[str]) -> str:
    return "" if names == ["naive"] else f" ({', '.join(names)})"


def legend(results: list[Result], settings: Settings) -> str:
    """What the table shows, which rows are the bug and which the fix."""
    size = _mb(results[0].document_bytes if results else settings.size)
    lines = [
        f"Per backend, 1 process rewrote a {size} self-validating document (its version and"
        f" the SHA-256 of its body) for {settings.seconds:g} s while"
        f" {_plural(settings.readers, 'process')} read it through the library, without retries."
        + (
            f" Then {_plural(settings.updaters, 'process')} each ran update()"
            f" {settings.updates} times on one counter."
            if settings.updaters
            else ""
        ),
        "torn: reads that returned a cut or mixed document. errors: reads, writes or updates"
        " that failed otherwise. updates: increments acknowledged. lost: acknowledged"
        " increments missing from the final counter. reads/s: all readers together.",
    ]
    tearing = _names(results, lambda c: not c.atomic_reads)
    losing = _names(results, lambda c: not c.cross_process) if settings.updaters else []
    if tearing or losing:
        flaws = []
        if tearing:
            flaws.append(
                f"without atomic reads{_which(tearing)}, readers see half-written documents"
            )
        if losing:
            flaws.append(
                f"without cross-process update(){_which(losing)}, updates in other processes"
                " overwrite each other"
            )
        naive = "naive rewrites the file in place, as open(path, 'w') does; "
        lines.append(
            f"The bug: {naive if 'naive' in tearing + losing else ''}{'; '.join(flaws)}."
            " Declared, so expected: not a failure."
        )
    safe = _names(results, lambda c: c.atomic_reads and c.cross_process)
    if safe:
        lines.append(
            f"The fix: {', '.join(safe)} {'promises' if len(safe) == 1 else 'promise'} atomic"
            " reads and cross-process update()."
        )
    lines.append(
        "A torn read or error where atomic reads are promised, or a lost update where"
        " cross-process update() is, is a failure: FAILED, and the exit status is 1."
    )
    return "".join(textwrap.fill(line, WIDTH, break_on_hyphens=False) + "\n" for line in lines)


def _capabilities(caps: Capabilities | None) -> dict[str, bool] | None:
    if caps is None:
        return None
    return {name: getattr(caps, name) for name in Capabilities.__dataclass_fields__}


def as_json(results: list[Result], settings: Settings) -> dict[str, Any]:
    return {
        "settings": {
            "seconds": settings.seconds,
            "readers": settings.readers,
            "size": settings.size,
            "updaters": settings.updaters,
            "updates": settings.updates,
            "durability": settings.durability,
        },
        "ok": all(not r.problems for r in results),
        "results": [
            {
                "backend": r.backend,
                "capabilities": _capabilities(r.capabilities),
                "document_bytes": r.document_bytes,
                "seconds": round(r.seconds, 3),
                "writes": r.writes,
                "writes_per_second": round(r.writes_per_second, 1),
                "reads": r.reads,
                "reads_per_second": round(r.reads_per_second, 1),
                "torn": r.torn,
                "versions_seen": r.versions_seen,
                "read_errors": r.read_errors,
                "write_errors": r.write_errors,
                "updaters": r.updaters,
                "updates": r.updates,
                "acknowledged": r.acknowledged,
                "final": r.final,
                "lost": r.lost if r.updaters else None,
                "update_errors": r.update_errors,
                "problems": list(r.problems),
            }
            for r in results
        ],
    }
