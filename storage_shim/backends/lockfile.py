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
import logging
import os
from collections.abc import Iterable, Iterator, Sequence

from .._types import Key
from ..backend import BackendSpec, Capabilities, WriteOutcome
from ..errors import CorruptDocumentError, NotFoundError, StorageError
from ..fs import CREATE_EXCL_FLAGS, WRITE_FLAGS
from ..keys import SUFFIX, is_valid_segment
from ..markers import hookimpl
from .files import STATE_DIR, TEMP_MARKER, FileBackend

_PRESENT = b"storage-shim backup v1 present\n"
_ABSENT = b"storage-shim backup v1 absent\n"
"""A backup of a document that did not exist: recovery removes what the crash left."""
_BACKUP_AREA = "backup"


def backup_of(previous: bytes | None) -> bytes:
    """The backup file's content for a document holding ``previous`` (None: no document)."""
    return _ABSENT if previous is None else _PRESENT + previous


logger = logging.getLogger("storage_shim")


class LockfileBackend(FileBackend):
    capabilities = Capabilities(
        atomic_reads=True, crash_safe=True, durable=True, cross_process=True
    )

    def read(self, key: Key) -> bytes:
        if not self._present(key):
            raise NotFoundError(key)
        with self.lock(key):
            self._recover_key(key)
            return self._read_unlocked(key)

    def exists(self, key: Key) -> bool:
        if not self._present(key):
            return False
        with self.lock(key):
            self._recover_key(key)
            return super().exists(key)

    def list(self, prefix: Key) -> Iterator[Key]:
        """Repairs first: a document a dead writer was creating must not be listed."""
        self._restore_interrupted()
        return super().list(prefix)

    def _present(self, key: Key) -> bool:
        """Whether a file is there at all: a missing document needs no lock (nor a lock file)."""
        try:
            self.fs.lstat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def write(self, key: Key, data: bytes) -> WriteOutcome:
        with self.lock(key):
            self._recover_key(key)
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
                self.fs.unlink(backup)  # the commit point
            except BaseException as exc:
                try:
                    self._restore(path, previous)
                    self._drop_backup(backup)
                except OSError as restore_error:
                    exc.add_note(
                        f"putting the previous document back failed too ({restore_error}); "
                        f"it is kept in {backup} and restored before the key is next used"
                    )
                raise
            self.sync_directory(backup)
            return WriteOutcome(synced, dir_synced)

    def remove(self, key: Key) -> bool:
        with self.lock(key):
            self._recover_key(key)
            return self.unlink_document(key)

    # -- the backup protocol ----------------------------------------------------------
    def _save_backup(self, key: Key, previous: bytes | None) -> str:
        """Publish a complete backup atomically: a torn backup must never be restored."""
        backup = self.private_path(_BACKUP_AREA, key, SUFFIX)
        self.prepare_directory(backup)
        temp = self.temp_path(backup)
        content = backup_of(previous)
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
        """Idempotent: a crash while restoring leaves the backup for the next attempt."""
        if previous is not None:
            self.write_file(path, previous, WRITE_FLAGS, truncate=True)
            return
        try:
            self.fs.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        self.sync_directory(path)

    def _recover_key(self, key: Key) -> bool:
        """With the key's lock held: finish what a dead writer left. True if it restored."""
        backup = self.private_path(_BACKUP_AREA, key, SUFFIX)
        try:
            content = self.fs.read_file(backup)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if content.startswith(_PRESENT):
            self._restore(self.path(key), content[len(_PRESENT) :])
        elif content == _ABSENT:
            self._restore(self.path(key), None)
        else:
            raise CorruptDocumentError(key, backup, "unrecognised lockfile backup")
        self._drop_backup(backup)
        return True

    def recover(self) -> Sequence[Key]:
        """Put back every document whose rewrite was interrupted; returns their keys.

        Each backup is handled under its key's lock: a rewrite still running in
        another process finishes (and removes its backup) first. A key that
        cannot be repaired now is logged and repaired before its next use.
        Temporary files that dead writers left beside documents go first.
        """
        self.sweep_temporary_files()
        return self._restore_interrupted()

    def _restore_interrupted(self) -> Sequence[Key]:
        restored: list[Key] = []
        for key, backup in self.interrupted_writes():
            try:
                with self.lock(key):
                    self._sweep_temps(backup)
                    if self._recover_key(key):
                        restored.append(key)
            except (OSError, StorageError) as exc:
                logger.warning("could not restore %s from its backup yet: %s", backup, exc)
        return restored

    def interrupted_writes(self) -> Iterator[tuple[Key, str]]:
        """Every key with a backup or a backup's temporary file, with its backup path."""
        area = self._checked((STATE_DIR,), (STATE_DIR, _BACKUP_AREA), "")
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
