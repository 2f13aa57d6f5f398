"""``lockfile``: rewrite the document in place under a sidecar lock, with a backup.

Choose it over ``atomic`` when the file must keep its identity: its inode,
owner, permissions, hard links and the watchers other programs hold on it, and
when no rename can be relied on (a program on Windows holding the file open).

Readers and writers of the library take the document's lock, so they never see
a torn document. Before a rewrite, the previous bytes are saved durably under
``.storage_shim/backup/``; the backup is removed once the new bytes are synced.
A failed rewrite puts the previous document back before raising, and opening
the store restores any document whose rewrite a crash interrupted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from .._types import Key
from ..backend import BackendSpec, Capabilities, WriteOutcome
from ..errors import NotFoundError
from ..fs import CREATE_EXCL_FLAGS, WRITE_FLAGS
from ..keys import SUFFIX, is_valid_segment
from ..markers import hookimpl
from .files import STATE_DIR, TEMP_MARKER, FileBackend

_PRESENT = b"storage-shim backup v1 present\n"
_ABSENT = b"storage-shim backup v1 absent\n"
"""A backup of a document that did not exist: recovery removes what the crash left."""
_BACKUP_AREA = "backup"


class LockfileBackend(FileBackend):
    capabilities = Capabilities(
        atomic_reads=True, crash_safe=True, durable=True, cross_process=True
    )

    def read(self, key: Key) -> bytes:
        # A document that does not exist yet needs no lock (and gets no lock file).
        try:
            self.fs.lstat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(key) from None
        with self.lock(key):
            return self._read_unlocked(key)

    def write(self, key: Key, data: bytes) -> WriteOutcome:
        with self.lock(key):
            path = self.path(key)
            try:
                previous: bytes | None = self._read_unlocked(key)
            except NotFoundError:
                previous = None
            backup = self._save_backup(key, previous)
            try:
                if previous is None:
                    self.prepare_directory(path)
                synced = self.write_file(path, data, WRITE_FLAGS, truncate=True)
                dir_synced = self.sync_directory(path) if previous is None else synced
            except BaseException as exc:
                try:
                    self._restore(path, previous)
                    self._drop_backup(backup)
                except OSError as restore_error:
                    exc.add_note(
                        f"putting the previous document back failed too ({restore_error}); "
                        f"it is kept in {backup} and restored when the store is next opened"
                    )
                raise
            self._drop_backup(backup)
            return WriteOutcome(synced, dir_synced)

    def remove(self, key: Key) -> bool:
        with self.lock(key):
            return self.unlink_document(key)

    # -- the backup protocol ----------------------------------------------------------
    def _save_backup(self, key: Key, previous: bytes | None) -> str:
        """Publish a complete backup atomically: a torn backup must never be restored."""
        backup = self.private_path(_BACKUP_AREA, key, SUFFIX)
        self.prepare_directory(backup)
        temp = self.temp_path(backup)
        content = _ABSENT if previous is None else _PRESENT + previous
        try:
            self.write_file(temp, content, CREATE_EXCL_FLAGS)
            self.fs.replace(temp, backup)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.unlink(temp)
            raise
        self.sync_directory(backup)
        return backup

    def _drop_backup(self, backup: str) -> None:
        """The write counts as done only once the backup is durably gone."""
        self.fs.unlink(backup)
        self.sync_directory(backup)

    def _restore(self, path: str, previous: bytes | None) -> None:
        if previous is None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.unlink(path)
            self.sync_directory(path)
        else:
            self.write_file(path, previous, WRITE_FLAGS, truncate=True)

    def recover(self) -> list[Key]:
        """Put back every document whose rewrite was interrupted; returns their keys.

        Each backup is handled under its key's lock, so a rewrite still running
        in another process finishes (and removes its backup) first.
        """
        restored = []
        for key, backup in self._backups():
            with self.lock(key):
                self._sweep_temps(backup)
                try:
                    content = self.fs.read_file(backup)
                except FileNotFoundError:
                    continue  # its writer finished while we waited, or only a temp was left
                if content.startswith(_PRESENT):
                    self._restore(self.path(key), content[len(_PRESENT) :])
                elif content == _ABSENT:
                    self._restore(self.path(key), None)
                else:
                    continue  # not ours: leave it for a person to look at
                self._drop_backup(backup)
                restored.append(key)
        return restored

    def _backups(self) -> Iterator[tuple[Key, str]]:
        """Every key with a backup or a backup's temporary file, with its backup path."""
        area = os.path.join(self.root, STATE_DIR, _BACKUP_AREA)
        seen: set[Key] = set()
        for directory, segments, found in self._private_files(area, ()):
            name = found
            if found.startswith(".") and found.endswith(TEMP_MARKER):
                name = found[1:].rsplit(".", 2)[0]  # .<name>.<hex>.ss-tmp
            if not name.endswith(SUFFIX) or not is_valid_segment(name[: -len(SUFFIX)]):
                continue
            key = (*segments, name[: -len(SUFFIX)])
            if key not in seen:
                seen.add(key)
                yield key, os.path.join(directory, name)

    def _private_files(self, directory: str, segments: Key) -> Iterator[tuple[str, Key, str]]:
        try:
            entries = list(self.fs.scandir(directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir and is_valid_segment(entry.name):
                yield from self._private_files(
                    os.path.join(directory, entry.name), (*segments, entry.name)
                )
            elif entry.is_file:
                yield directory, segments, entry.name

    def _sweep_temps(self, backup: str) -> None:
        directory, name = os.path.split(backup)
        for entry in self.fs.scandir(directory):
            if entry.name.startswith(f".{name}.") and entry.name.endswith(TEMP_MARKER):
                self.fs.unlink(os.path.join(directory, entry.name))


@hookimpl
def storage_shim_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            "lockfile", LockfileBackend, "in-place rewrite under a sidecar lock, with backup"
        )
    ]
