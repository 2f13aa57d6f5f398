"""What a bench run found: rows of cells, scale figures, curves and target verdicts."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .timing import Sample, median_rate
from .workloads import Cell


@dataclass
class Row:
    """One subject in one cell: a sample per round, or why it did not run."""

    subject: str
    kind: str
    samples: list[Sample] = field(default_factory=list)
    note: str | None = None

    @property
    def rate(self) -> float | None:
        return median_rate(self.samples) if self.samples and self.note is None else None


@dataclass
class CellResult:
    cell: Cell
    baseline: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def row(self, subject: str) -> Row | None:
        return next((row for row in self.rows if row.subject == subject), None)

    def rate(self, subject: str) -> float | None:
        row = self.row(subject)
        return row.rate if row else None

    def speeds(self, subject: str, reference: str) -> list[float]:
        """``subject``'s throughput over ``reference``'s, round by round.

        Both ran in the same rounds, so each round's ratio compares them under
        the same conditions; a slow round slows both.
        """
        mine, theirs = self.row(subject), self.row(reference)
        if mine is None or theirs is None or mine.rate is None or theirs.rate is None:
            return []
        if len(mine.samples) != len(theirs.samples):  # one failed midway: medians only
            return [mine.rate / theirs.rate]
        pairs = zip(mine.samples, theirs.samples, strict=True)
        return [a.rate / b.rate for a, b in pairs if a.rate > 0 and b.rate > 0]

    def speed(self, subject: str, reference: str) -> float | None:
        """The median of :meth:`speeds`."""
        speeds = self.speeds(subject, reference)
        return statistics.median(speeds) if speeds else None


@dataclass
class Figure:
    """A scale figure: one value, with the reference it is compared to when there is one."""

    id: str
    title: str
    value: float | None
    unit: str
    reference: float | None = None
    reference_title: str | None = None
    note: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.reference:
            return None
        return self.value / self.reference


@dataclass
class Curve:
    """How a cost grows: ``series[name][i]`` is measured at ``points[i]``."""

    id: str
    title: str
    x_label: str
    y_label: str
    points: list[str]
    series: dict[str, list[float]]


@dataclass
class Verdict:
    """One target of the issue, checked against this run."""

    name: str
    goal: str
    measured: float | None
    shown: str
    met: bool | None
    """None: not measured in this run (filtered out, or a subject missing)."""
    detail: str = ""
    rounds_disagree: bool = False
    """Some rounds alone would have given the other verdict: the figure is within the noise."""

    @property
    def status(self) -> str:
        status = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        return f"{status} (rounds disagree)" if self.rounds_disagree else status


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    cells: list[CellResult] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
