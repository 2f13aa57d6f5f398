"""``naive``: truncate the file and write it in place, the way most apps do.

It is the baseline that reproduces the bug: a reader can see a half-written
document, a crash can leave an empty or partial file, and ``update()`` only
excludes threads of the same process. Use it to measure, never to keep data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from .._types import Key
from ..backend import BackendSpec, Capabilities, WriteOutcome
from ..fs import TRUNCATE_FLAGS
from ..markers import hookimpl
from .files import FileBackend


class NaiveBackend(FileBackend):
    capabilities = Capabilities(
        atomic_reads=False, crash_safe=False, durable=False, cross_process=False
    )

    def write(self, key: Key, data: bytes) -> WriteOutcome:
        with self.lock(key):
            return self._write_unlocked(key, data)

    def _write_unlocked(self, key: Key, data: bytes) -> WriteOutcome:
        path = self.path(key)
        self.prepare_directory(path)
        new = not self.fs.exists(path)
        with self.refusing_links(key):
            synced = self.write_file(path, data, TRUNCATE_FLAGS)
        return WriteOutcome(synced, self.sync_directory(path) if new else synced)

    def remove(self, key: Key) -> bool:
        with self.lock(key):
            return self.unlink_document(key)

    @contextlib.contextmanager
    def lock(self, key: Key) -> Iterator[None]:
        """Threads only: the naive strategy takes no file lock, so processes lose updates."""
        with self._thread_lock(key):
            yield


@hookimpl
def storage_shim_backends() -> Iterable[BackendSpec]:
    return [BackendSpec("naive", NaiveBackend, "truncate and rewrite in place (unsafe baseline)")]
