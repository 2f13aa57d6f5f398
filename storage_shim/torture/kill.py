"""SIGKILL rounds: kill a writer at a random moment, reopen, and check every document.

After each kill, every document must be one whole version (old-or-new), never
older than the last write the writer saw acknowledged, never newer than the
last it attempted.
"""

from __future__ import annotations

import functools
import itertools
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import storage_shim as ss

from ..testing.workers import START_TIMEOUT, spawn_context
from .document import classify_read, make_document
from .errors import TortureError


def _key(index: int) -> str:
    return f"killed/doc{index}"


def write_until_killed(
    location: str,
    backend: str,
    durability: ss.Durability,
    *,
    documents: int,
    size: int,
    first_version: int,
    channel: Connection,
) -> None:
    """Write versions ``first_version``, ``+1``... of every document in turn, forever.

    Sends ``("attempt", index, version)`` before each write and ``("ack", index,
    version)`` once it returned; each message is one small pipe write, whole or absent.
    """
    with ss.open_store(location, backend=backend, durability=durability) as store:
        channel.send(("ready", -1, -1))
        for version in itertools.count(first_version):
            document = make_document(version, size)
            for index in range(documents):
                channel.send(("attempt", index, version))
                store.write(_key(index), document)
                channel.send(("ack", index, version))


@dataclass(frozen=True)
class KillRound:
    delay: float
    """Seconds between the writer being ready and the kill."""
    acknowledged: dict[int, int]
    """The last acknowledged version of each document, over every round so far."""
    attempted: dict[int, int]
    """The version of each document's last write attempted, over every round so far."""
    found: dict[int, int | str]
    """What the reopened store returned: a version, ``"torn"``, or an error's type name."""
    problems: tuple[str, ...]

    @property
    def in_flight(self) -> bool:
        """Whether the kill landed while a write was under way (attempted, not acknowledged)."""
        return self.acknowledged != self.attempted


@dataclass(frozen=True)
class KillReport:
    backend: str
    rounds: list[KillRound] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [f"round {i + 1}: {p}" for i, r in enumerate(self.rounds) for p in r.problems]


def judge(
    index: int, found: int | str, acknowledged: int | None, attempted: int | None
) -> str | None:
    """What is wrong with document ``index`` after the kill, or None."""
    allowed = {v for v in (acknowledged, attempted) if v is not None}
    if found == "NotFoundError":
        return None if acknowledged is None else f"doc{index}: acknowledged v{acknowledged} lost"
    if isinstance(found, str):
        return f"doc{index}: {found} (acknowledged v{acknowledged}, attempted v{attempted})"
    if found in allowed:
        return None
    return f"doc{index}: v{found}, neither acknowledged v{acknowledged} nor attempted v{attempted}"


def _ready(channel: Connection) -> bool:
    try:
        return channel.poll(START_TIMEOUT) and channel.recv()[0] == "ready"
    except (EOFError, OSError):
        return False


def _drain(channel: Connection, acknowledged: dict[int, int], attempted: dict[int, int]) -> None:
    while True:
        try:
            if not channel.poll():
                return
            kind, index, version = channel.recv()
        except (EOFError, OSError):
            return
        (acknowledged if kind == "ack" else attempted)[index] = version


def _one_round(
    location: str,
    backend: str,
    durability: ss.Durability,
    *,
    documents: int,
    size: int,
    delay: float,
    acknowledged: dict[int, int],
    attempted: dict[int, int],
) -> KillRound:
    ctx = spawn_context()
    receiving, sending = ctx.Pipe(duplex=False)
    writer = ctx.Process(
        target=write_until_killed,
        args=(location, backend, durability),
        kwargs={
            "documents": documents,
            "size": size,
            "first_version": max(attempted.values(), default=0) + 1,
            "channel": sending,
        },
        name=f"storage-shim-killed-writer-{backend}",
        daemon=True,
    )
    writer.start()
    sending.close()  # the writer's copy is then the only one: its death ends the pipe
    try:
        if not _ready(receiving):
            writer.join(1)
            raise TortureError(
                f"{backend}: the writer did not open the store (exit code {writer.exitcode})"
            )
        time.sleep(delay)
        writer.kill()
        writer.join(START_TIMEOUT)
        _drain(receiving, acknowledged, attempted)
    finally:
        if writer.is_alive():
            writer.kill()
            writer.join()
        receiving.close()
    with ss.open_store(location, backend=backend, read_retries=0) as store:
        found: dict[int, int | str] = {}
        for index in range(documents):
            outcome, version = classify_read(functools.partial(store.read, _key(index)))
            found[index] = version if version is not None else outcome
    problems = [
        problem
        for index in range(documents)
        if (problem := judge(index, found[index], acknowledged.get(index), attempted.get(index)))
    ]
    snapshot = KillRound(delay, dict(acknowledged), dict(attempted), found, tuple(problems))
    for index, value in found.items():  # the next round starts from what is on disk
        if isinstance(value, int):
            acknowledged[index] = attempted[index] = value
    return snapshot


def run_kill_rounds(
    location: str,
    backend: str,
    *,
    rounds: int = 20,
    documents: int = 3,
    size: int = 100_000,
    max_delay: float = 0.1,
    durability: ss.Durability = "fsync",
    seed: int | None = None,
    stop_at_first_problem: bool = False,
) -> KillReport:
    """Kill a writer of ``documents`` documents ``rounds`` times; see the module docstring.

    Each kill comes a random delay (up to ``max_delay`` seconds, from ``seed``)
    after the writer opened its store. The store at ``location`` is reopened
    (so the backend recovers) and checked after every kill.
    """
    pick = random.Random(seed)  # noqa: S311  # kill timings, not secrets
    report = KillReport(backend)
    acknowledged: dict[int, int] = {}
    attempted: dict[int, int] = {}
    for _ in range(rounds):
        outcome = _one_round(
            location,
            backend,
            durability,
            documents=documents,
            size=size,
            delay=pick.uniform(0, max_delay),
            acknowledged=acknowledged,
            attempted=attempted,
        )
        report.rounds.append(outcome)
        if outcome.problems and stop_at_first_problem:
            break
    return report
