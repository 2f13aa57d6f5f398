"""Worker processes for the cells measured across processes (``update()``).

The workers start once per run (spawned, like a fresh interpreter) and stay:
each round, the parent names a subject and a start time, every worker runs
its operation until the window closes and answers how many it completed.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from .catalog import all_subjects
from .subjects import Options, Prepared, Subject
from .timing import Sample
from .workloads import Cell

_START_DELAY = 0.05
"""Seconds between sending the round and its start: every worker is waiting by then."""


class WorkerError(RuntimeError):
    """A worker process failed; the message holds its exception."""


def _serve(connection: Connection, options: Options) -> None:
    subjects = {subject.name: subject for subject in all_subjects(options)}
    ready: dict[tuple[str, str], Prepared] = {}
    while True:
        command, *arguments = connection.recv()
        if command == "stop":
            for prepared in ready.values():
                prepared.close()
            connection.send(("ok", None))
            return
        try:
            connection.send(("ok", _handle(command, arguments, subjects, ready)))
        except Exception as exc:
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


def _handle(
    command: str,
    arguments: list[Any],
    subjects: dict[str, Subject],
    ready: dict[tuple[str, str], Prepared],
) -> object:
    if command == "attach":
        name, cell, directory = arguments
        ready[name, cell.id] = subjects[name].prepare(cell, directory, create=False)
        return None
    if command == "detach":
        name, cell = arguments
        ready.pop((name, cell.id)).close()
        return None
    name, cell, worker, start_at, seconds = arguments
    operation = ready[name, cell.id].operation(worker)
    time.sleep(max(0.0, start_at - time.time()))
    deadline, n = start_at + seconds, 0
    while True:
        operation()
        n += 1
        if time.time() >= deadline:
            return n, time.time()


def _answers(connections: Sequence[Connection]) -> list[Any]:
    """Every worker's answer; the first error is raised once all have answered."""
    replies = [connection.recv() for connection in connections]
    for status, answer in replies:
        if status != "ok":
            raise WorkerError(answer)
    return [answer for _, answer in replies]


class Workers:
    """``count`` spawned processes; cells use the first ``cell.parallel`` of them."""

    def __init__(self, count: int, options: Options) -> None:
        context = multiprocessing.get_context("spawn")
        self.connections: list[Connection] = []
        self.processes = []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child, options), daemon=True)
            process.start()
            child.close()
            self.connections.append(parent)
            self.processes.append(process)

    def _ask(self, connections: Sequence[Connection], message: tuple[Any, ...]) -> list[Any]:
        for connection in connections:
            connection.send(message)
        return _answers(connections)

    def attach(self, name: str, cell: Cell, directory: str) -> None:
        self._ask(self.connections[: cell.parallel], ("attach", name, cell, directory))

    def detach(self, name: str, cell: Cell) -> None:
        self._ask(self.connections[: cell.parallel], ("detach", name, cell))

    def run(self, name: str, cell: Cell, seconds: float) -> Sample:
        start_at = time.time() + _START_DELAY
        for worker, connection in enumerate(self.connections[: cell.parallel]):
            connection.send(("run", name, cell, worker, start_at, seconds))
        results = _answers(self.connections[: cell.parallel])
        return Sample(sum(n for n, _ in results), max(end for _, end in results) - start_at)

    def close(self) -> None:
        for connection in self.connections:
            try:
                connection.send(("stop",))
                connection.recv()
            except (OSError, EOFError):
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
