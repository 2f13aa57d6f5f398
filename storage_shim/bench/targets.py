"""The targets of issue 7, each a ratio of two figures from the same run."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from .baselines import SQLITE_FULL
from .results import CellResult, Verdict
from .subjects import RAW_READ, RAW_REPLACE


@dataclass(frozen=True)
class CellTarget:
    """``subject`` against ``reference`` in cell ``cell``.

    A cost target bounds the time per operation (the reference's throughput
    over the subject's) from above; a speed target bounds the throughput
    ratio from below.
    """

    name: str
    cell: str
    subject: str
    reference: str
    limit: float
    cost: bool

    @property
    def goal(self) -> str:
        if self.cost:
            return f"at most {self.limit:.2f}x the time of {self.reference}"
        return f"at least {self.limit:.2f}x the throughput of {self.reference}"


READ_CHECKED = ("atomic", "journal")
"""``lockfile`` reads under the lock by design (its writes are in place); it is shown, not held."""
UPDATE_CHECKED = ("lockfile", "atomic", "journal")

CELL_TARGETS: tuple[CellTarget, ...] = (
    CellTarget(
        "atomic durable write of 2 KB", "write/2KB/1t/fsync", "atomic", RAW_REPLACE, 1.10, True
    ),
    *(
        CellTarget(f"{b} read of 2.5 MB", "read/2.5MB/1t", b, RAW_READ, 1.10, True)
        for b in READ_CHECKED
    ),
    *(CellTarget(f"{b} read of 2 KB", "read/2KB/1t", b, RAW_READ, 1.5, True) for b in READ_CHECKED),
    CellTarget(
        "journal durable writes, 8 threads", "write/2KB/8t/fsync", "journal", "atomic", 2.0, False
    ),
    CellTarget(
        "journal durable writes, 1 thread", "write/2KB/1t/fsync", "journal", SQLITE_FULL, 1.0, False
    ),
    *(
        CellTarget(
            f"{b} update() from 4 processes", "update/2KB/4p/fsync", b, SQLITE_FULL, 0.8, False
        )
        for b in UPDATE_CHECKED
    ),
)


def references(cell_id: str, subjects: Iterable[str]) -> set[str]:
    """The subjects the targets of the selected ``subjects`` in ``cell_id`` compare them to."""
    chosen = set(subjects)
    return {t.reference for t in CELL_TARGETS if t.cell == cell_id and t.subject in chosen}


def ratio_verdict(
    name: str, goal: str, ratio: float | None, limit: float, *, at_most: bool
) -> Verdict:
    met = None if ratio is None else (ratio <= limit if at_most else ratio >= limit)
    shown = "-" if ratio is None else f"{ratio:.2f}x"
    return Verdict(name, goal, ratio, shown, met)


def judge(target: CellTarget, result: CellResult | None) -> Verdict:
    """The median of the round-by-round ratios against the limit."""
    speeds = result.speeds(target.subject, target.reference) if result else []
    ratios = sorted(1 / s if target.cost else s for s in speeds)
    ratio = statistics.median(ratios) if ratios else None
    verdict = ratio_verdict(target.name, target.goal, ratio, target.limit, at_most=target.cost)
    verdict.detail = target.cell
    if ratios:
        verdict.rounds_disagree = ratios[0] <= target.limit <= ratios[-1]
    return verdict


def targets_of(result: CellResult, subject: str) -> list[CellTarget]:
    return [t for t in CELL_TARGETS if t.cell == result.cell.id and t.subject == subject]


def check_cells(results: Iterable[CellResult]) -> list[Verdict]:
    by_id = {result.cell.id: result for result in results}
    return [judge(target, by_id.get(target.cell)) for target in CELL_TARGETS]
