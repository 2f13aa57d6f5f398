"""``memory``: documents in a dict, the test double a host uses in its own tests.

Like httpx's mock transport it goes through the whole store (keys, JSON,
routing, hooks) but touches no file. Nothing survives :meth:`close`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator

from .._types import Key
from ..backend import Backend, BackendSpec, Capabilities, WriteOutcome
from ..errors import NotFoundError
from ..markers import hookimpl


class MemoryBackend(Backend):
    capabilities = Capabilities(
        atomic_reads=True, crash_safe=False, durable=False, cross_process=False, persistent=False
    )
    durability = "none"

    def __init__(self, location: object = None) -> None:
        self.documents: dict[Key, bytes] = {}
        self.quarantined: list[tuple[Key, bytes]] = []
        self._locks: defaultdict[Key, threading.RLock] = defaultdict(threading.RLock)
        self._guard = threading.Lock()

    def read(self, key: Key) -> bytes:
        try:
            return self.documents[key]
        except KeyError:
            raise NotFoundError(key) from None

    def write(self, key: Key, data: bytes) -> WriteOutcome:
        with self.lock(key):
            self.documents[key] = bytes(data)
        return WriteOutcome(file_synced=False, dir_synced=False)

    def remove(self, key: Key) -> bool:
        with self.lock(key):
            return self.documents.pop(key, None) is not None

    def exists(self, key: Key) -> bool:
        return key in self.documents

    def quarantine(self, key: Key, data: bytes) -> str | None:
        with self.lock(key):
            if self.documents.get(key) != data:
                return None
            self.quarantined.append((key, self.documents.pop(key)))
            return f"memory quarantine #{len(self.quarantined)}"

    def list(self, prefix: Key) -> Iterable[Key]:
        n = len(prefix)
        return [key for key in list(self.documents) if key[:n] == prefix]

    @contextlib.contextmanager
    def lock(self, key: Key) -> Iterator[None]:
        with self._guard:
            lock = self._locks[key]
        with lock:
            yield

    def close(self) -> None:
        self.documents.clear()


@hookimpl
def storage_shim_backends() -> Iterable[BackendSpec]:
    return [BackendSpec("memory", MemoryBackend, "in-process dict, for a host's own tests")]
