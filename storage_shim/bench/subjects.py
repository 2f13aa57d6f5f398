"""The contenders: every installed backend through the store, and the raw protocols.

A :class:`Subject` prepares one cell in a directory of its own and hands out
one operation per thread or process; third-party baselines live in
:mod:`.baselines`.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from .._types import Key
from ..backend import BackendSpec
from ..fs import CAN_SYNC_DIRECTORIES
from ..store import Store, backend_specs, open_store
from .workloads import TRANSACTION_DOCUMENTS, Cell, bump, make_document

Operation = Callable[[], object]
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
COUNTER: Key = ("bench", "counter")


@dataclass(frozen=True)
class Options:
    """What subjects need from the command line; sent to worker processes too."""

    postgres: str | None = None


def worker_key(worker: int, part: int | None = None) -> Key:
    return ("bench", f"w{worker}" if part is None else f"w{worker}-{part}")


def existing_keys(cell: Cell) -> list[Key]:
    """The documents a cell's operations work on, written before its rounds."""
    if cell.workload == "update":
        return [COUNTER]
    if cell.workload == "transaction":
        parts = range(TRANSACTION_DOCUMENTS)
        return [worker_key(w, part) for w in range(cell.parallel) for part in parts]
    return [worker_key(w) for w in range(cell.parallel)]


def document_path(directory: str, key: Key) -> str:
    return os.path.join(directory, *key[:-1], key[-1] + ".json")


class Prepared(abc.ABC):
    """A subject set up for one cell: operations for each worker, and the cleanup."""

    @abc.abstractmethod
    def operation(self, worker: int) -> Operation:
        """What worker ``worker`` (a thread or a process) repeats."""

    def settle(self) -> None:  # noqa: B027  # most subjects defer nothing
        """Finish work the operations deferred; timed as part of the round."""

    def counter(self) -> int | None:
        """The update workload's counter now, or None where it cannot be read back."""
        return None

    def close(self) -> None:  # noqa: B027  # most subjects hold nothing
        """Release what :meth:`Subject.prepare` acquired."""


class Subject(abc.ABC):
    name: str
    description: str
    kind: str
    """``backend``, ``raw`` or ``library``: how the table groups it."""
    requires: str | None = None
    """The module of an optional dependency."""

    def missing(self) -> str | None:
        """Why the subject cannot run here, or None."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"not installed (pip install {self.requires})"
        return None

    @abc.abstractmethod
    def supports(self, cell: Cell) -> bool: ...

    @abc.abstractmethod
    def prepare(self, cell: Cell, directory: str, *, create: bool = True) -> Prepared:
        """Set up ``cell`` in ``directory``; ``create=False`` attaches to what another made."""


class _StorePrepared(Prepared):
    def __init__(self, store: Store, cell: Cell, prefix: Key, create: bool) -> None:
        self.store, self.cell, self.prefix = store, cell, prefix
        self.document = make_document(cell.size)
        self.written: set[Key] = set()
        if create:  # documents exist before the first round, and rest in their files
            for key in existing_keys(cell):
                self._write(self.key(key), self.document)
            store.checkpoint()

    def key(self, key: Key) -> Key:
        return (*self.prefix, *key)

    def _write(self, key: Key, value: Any) -> None:
        self.store.write(key, value)
        self.written.add(key)

    def operation(self, worker: int) -> Operation:
        store, document, workload = self.store, self.document, self.cell.workload
        if workload == "write":
            key = self.key(worker_key(worker))
            self.written.add(key)
            return lambda: store.write(key, document)
        if workload == "read":
            key = self.key(worker_key(worker))
            return lambda: store.read(key)
        if workload == "update":
            counter = self.key(COUNTER)
            return lambda: store.update(counter, bump, default=document)
        keys = [self.key(worker_key(worker, part)) for part in range(TRANSACTION_DOCUMENTS)]
        self.written.update(keys)

        def transaction() -> None:
            with store.transaction() as tx:
                for key in keys:
                    tx.write(key, document)

        return transaction

    def settle(self) -> None:
        for name in self.store.targets:
            publish = getattr(self.store.backend(name), "publish", None)
            if callable(publish):
                publish()

    def counter(self) -> int | None:
        spec = self.store.specs[self.store.default_backend]
        if spec.capabilities is not None and not spec.capabilities.persistent:
            return None  # each process had its own documents
        value: Any = self.store.get(self.key(COUNTER))
        return None if value is None else int(value["counter"])

    def close(self) -> None:
        try:
            if self.prefix:  # a shared database: leave nothing behind
                for key in self.written:
                    with contextlib.suppress(Exception):
                        self.store.remove(key)
        finally:
            self.store.close()


class BackendSubject(Subject):
    """An installed backend, through :func:`storage_shim.open_store`."""

    kind = "backend"

    def __init__(self, spec: BackendSpec, options: Options) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self.uri: str | None = None
        if POSTGRES_SCHEMES & set(spec.schemes):
            self.uri = options.postgres

    def missing(self) -> str | None:
        if POSTGRES_SCHEMES & set(self.spec.schemes) and self.uri is None:
            return "needs a database: --postgres URI"
        return None

    def supports(self, cell: Cell) -> bool:
        caps = self.spec.capabilities
        if cell.workload == "transaction":
            return caps is not None and caps.transactions
        if cell.workload == "update" and cell.parallel > 1:
            return caps is not None and caps.cross_process and caps.persistent
        return True

    def prepare(self, cell: Cell, directory: str, *, create: bool = True) -> Prepared:
        location = self.uri or directory
        prefix: Key = ("run", os.path.basename(directory)) if self.uri else ()
        store = open_store(location, backend=self.name, durability=cell.durability)
        try:
            return _StorePrepared(store, cell, prefix, create)
        except BaseException:
            store.close()
            raise


class _Files(Prepared):
    """Documents as plain files, by the hand-written protocols."""

    def __init__(self, cell: Cell, directory: str, write: Callable[[str, bytes], None]) -> None:
        self.cell, self.directory, self.write = cell, directory, write
        self.document = make_document(cell.size)
        os.makedirs(os.path.join(directory, "bench"), exist_ok=True)
        data = orjson.dumps(self.document)
        for key in existing_keys(cell):
            _truncate_and_write(document_path(directory, key), data, True)

    def operation(self, worker: int) -> Operation:
        path = document_path(self.directory, worker_key(worker))
        if self.cell.workload == "read":
            return lambda: _open_read_loads(path)
        write, document = self.write, self.document
        return lambda: write(path, orjson.dumps(document))


def _open_read_loads(path: str) -> Any:
    with open(path, "rb") as file:
        return orjson.loads(file.read())


def _truncate_and_write(path: str, data: bytes, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: str, data: bytes, sync: bool) -> None:
    temp = f"{path}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    if sync and CAN_SYNC_DIRECTORIES:
        directory = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


RawWrite = Callable[[str, bytes, bool], None]


class RawSubject(Subject):
    """A protocol written by hand with ``os`` calls: the floor each backend is held to."""

    kind = "raw"

    def __init__(self, name: str, workload: str, description: str, write: RawWrite) -> None:
        self.name, self.workload, self.description, self._write = name, workload, description, write

    def supports(self, cell: Cell) -> bool:
        return cell.workload == self.workload

    def prepare(self, cell: Cell, directory: str, *, create: bool = True) -> Prepared:
        sync = cell.durability != "none"
        raw = self._write
        return _Files(cell, directory, lambda path, data: raw(path, data, sync))


RAW_TRUNCATE = "raw:truncate-write"
RAW_REPLACE = "raw:temp-replace"
RAW_READ = "raw:read-loads"


def raw_subjects() -> list[Subject]:
    return [
        RawSubject(
            RAW_TRUNCATE,
            "write",
            "orjson.dumps, open(O_TRUNC), write, fsync (with durability fsync)",
            _truncate_and_write,
        ),
        RawSubject(
            RAW_REPLACE,
            "write",
            "orjson.dumps, temp file, fsync, os.replace, directory fsync (fsyncs with durability"
            " fsync)",
            _replace,
        ),
        RawSubject(RAW_READ, "read", "open, read, orjson.loads", _truncate_and_write),
    ]


def backend_subjects(options: Options) -> list[Subject]:
    return [BackendSubject(spec, options) for spec in backend_specs().values()]


@contextlib.contextmanager
def prepared(subject: Subject, cell: Cell, directory: str) -> Iterator[Prepared]:
    ready = subject.prepare(cell, directory)
    try:
        yield ready
    finally:
        ready.close()
