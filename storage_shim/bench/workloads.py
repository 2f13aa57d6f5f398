"""What is measured: a workload at one document size, parallelism and durability."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Workload = Literal["write", "read", "update", "transaction"]
Durability = Literal["none", "fsync"]

SMALL = 2_000
LARGE = 2_500_000
SIZE_LABELS = {SMALL: "2KB", LARGE: "2.5MB"}
TRANSACTION_DOCUMENTS = 4
"""Documents written by one transaction of the transaction workload."""


def size_label(size: int) -> str:
    return SIZE_LABELS.get(size, f"{size}B")


def make_document(size: int) -> dict[str, Any]:
    """A chat-session-like document whose compact JSON is about ``size`` bytes."""
    text = "the quick brown fox jumps over the lazy dog " * 2
    messages = [
        {"role": "user" if i % 2 else "assistant", "n": i, "text": text}
        for i in range(max(1, size // 125))
    ]
    return {"counter": 0, "title": "benchmark", "messages": messages}


def bump(document: dict[str, Any]) -> dict[str, Any]:
    """The update workload's function: increment the counter, keep the rest."""
    return {**document, "counter": document["counter"] + 1}


@dataclass(frozen=True)
class Cell:
    """One line of the grid: every subject runs it in the same rounds.

    ``parallel`` is the number of threads, or of processes for ``update``.
    Reads ignore durability.
    """

    workload: Workload
    size: int
    parallel: int
    durability: Durability

    @property
    def processes(self) -> bool:
        return self.workload == "update"

    @property
    def id(self) -> str:
        unit = "p" if self.processes else "t"
        size = size_label(self.size)
        if self.workload == "transaction":
            size = f"{TRANSACTION_DOCUMENTS}x{size}"
        parts = [self.workload, size, f"{self.parallel}{unit}"]
        if self.workload != "read":
            parts.append(self.durability)
        return "/".join(parts)

    @property
    def title(self) -> str:
        size = size_label(self.size).replace("KB", " KB").replace("MB", " MB")
        what = {
            "write": f"write() of {size}",
            "read": f"read() of {size}",
            "update": f"update() of {size}",
            "transaction": f"transaction of {TRANSACTION_DOCUMENTS} x {size}",
        }[self.workload]
        unit = "process" if self.processes else "thread"
        plural = "" if self.parallel == 1 else ("es" if self.processes else "s")
        title = f"{what}, {self.parallel} {unit}{plural}"
        if self.workload != "read":
            title += f", durability {self.durability}"
        return title

    @property
    def bytes_per_op(self) -> int:
        return self.size * (TRANSACTION_DOCUMENTS if self.workload == "transaction" else 1)


def grid(sizes: tuple[int, ...] = (SMALL, LARGE)) -> list[Cell]:
    """Every cell of a full run, in the order they run and print."""
    durabilities: tuple[Durability, ...] = ("fsync", "none")
    cells = [
        Cell("write", size, threads, durability)
        for size in sizes
        for threads in (1, 8)
        for durability in durabilities
    ]
    cells += [Cell("read", size, threads, "none") for size in sizes for threads in (1, 8)]
    cells += [Cell("update", SMALL, n, durability) for n in (1, 4) for durability in durabilities]
    cells += [Cell("transaction", SMALL, threads, "fsync") for threads in (1, 8)]
    return cells
