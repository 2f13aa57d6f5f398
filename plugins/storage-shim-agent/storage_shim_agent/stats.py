"""Write statistics per key prefix, fed by the ``storage_shim_after_write`` hook."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType


@dataclass(frozen=True)
class PrefixStats:
    """The writes of the documents below one prefix (the key's first segment).

    ``seconds`` is the backend's wall time (``Receipt.seconds``): for a document
    written by a transaction, the time of the whole commit, so the writes of one
    transaction each count it.
    """

    count: int = 0
    bytes: int = 0
    max_bytes: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0
    backends: frozenset[str] = frozenset()

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.count if self.count else 0.0

    def add(self, backend: str, size: int, seconds: float) -> PrefixStats:
        return replace(
            self,
            count=self.count + 1,
            bytes=self.bytes + size,
            max_bytes=max(self.max_bytes, size),
            seconds=self.seconds + seconds,
            max_seconds=max(self.max_seconds, seconds),
            backends=self.backends | {backend},
        )


class WriteStats:
    """Thread-safe: the hook runs on whichever thread wrote."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, PrefixStats] = {}
        self._guard = threading.Lock()

    def record(self, prefix: str, backend: str, size: int, seconds: float) -> None:
        with self._guard:
            self._by_prefix[prefix] = self._by_prefix.get(prefix, PrefixStats()).add(
                backend, size, seconds
            )

    def snapshot(self) -> Mapping[str, PrefixStats]:
        with self._guard:
            return MappingProxyType(dict(sorted(self._by_prefix.items())))

    def clear(self) -> None:
        with self._guard:
            self._by_prefix.clear()
