"""``journal``: a redo log that makes multi-document transactions all-or-nothing.

Every commit appends one record holding the full new bytes of each document
it changes to a segment under ``<location>/.storage_shim/journal/``, then
flushes the segment: the commit is durable once the record is. Documents are
published afterwards as ``<location>/<key>.json`` by rename, without a flush
of their own; until a checkpoint has flushed them, the log is the truth, and
readers using the library consult the log before the files. Concurrent
committers in one process share a flush (group commit). ``docs/journal.md``
has the format, the protocols and the sources they follow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson

from .._types import Key
from ..backend import BackendSpec, BackendTransaction, Capabilities, Durability, WriteOutcome
from ..errors import (
    BackendPoisonedError,
    CorruptJournalError,
    NotFoundError,
    StoreClosedError,
    UnsupportedOperationError,
)
from ..fs import CREATE_EXCL_FLAGS, READ_WRITE_FLAGS, FileSystem
from ..journal import records
from ..journal.group_commit import GroupCommit
from ..journal.records import HEADER_SIZE, Change, SegmentHeader
from ..journal.writer_lock import WriterLock
from ..markers import hookimpl
from .files import STATE_DIR, TEMP_MARKER, FileBackend

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
POINTER = "current"
"""The checkpoint pointer: names the segment recovery starts from."""
SEGMENT_SUFFIX = ".log"
JOURNAL_TEMP_MARKER = ".jnl" + TEMP_MARKER
_NEW_SEGMENT_FLAGS = READ_WRITE_FLAGS | os.O_CREAT | os.O_EXCL
_ROTATION_SIZE = records.RECORD_HEADER_SIZE + 8
"""Room kept at the end of the zero-filled area for the record that closes a segment."""


def segment_name(number: int) -> str:
    return f"{number:012d}{SEGMENT_SUFFIX}"


@dataclass(frozen=True)
class JournalState:
    """What :meth:`JournalBackend.inspect` found: the log as recovery would see it."""

    directory: str
    pointer: int | None
    """The segment the checkpoint pointer names; None before the first commit."""
    segments: tuple[str, ...]
    """Every segment file present; more than one means a checkpoint was interrupted."""
    commits: int
    """Transactions in the log since the last checkpoint: replayed by the next opening."""
    log_bytes: int
    documents: Mapping[Key, bytes | None]
    """The latest committed bytes of each document the log holds (None: removed)."""
    torn: bool
    """The log ends in bytes that are not a valid record: a torn write (or one in flight)."""
    temporary_files: tuple[str, ...]

    @property
    def needs_recovery(self) -> bool:
        return bool(self.commits or self.torn or len(self.segments) > 1 or self.temporary_files)


class _Window:
    """Reads of one segment through a small cache that grows while reading forward."""

    def __init__(self, fs: FileSystem, fd: int) -> None:
        self.fs, self.fd = fs, fd
        self.start, self.data, self.size = 0, b"", 4096

    def pread(self, size: int, offset: int) -> bytes:
        end = offset + size
        if self.start <= offset and end <= self.start + len(self.data):
            return self.data[offset - self.start : end - self.start]
        self.data = self.fs.pread(self.fd, max(size, self.size), offset)
        self.start, self.size = offset, min(self.size * 2, 1 << 20)
        return self.data[:size]


class _Transaction(BackendTransaction):
    def __init__(self, backend: JournalBackend) -> None:
        self.backend = backend

    def read(self, key: Key) -> bytes:
        return self.backend.read(key)

    def commit(self, changes: Mapping[Key, bytes | None]) -> WriteOutcome:
        return self.backend.commit_locked([list(changes.items())])


class JournalBackend(FileBackend):
    capabilities = Capabilities(
        atomic_reads=True, crash_safe=True, durable=True, cross_process=True, transactions=True
    )

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        durability: Durability = "fsync",
        lock_timeout: float = 30.0,
        publish_delay: float | None = 0.02,
        checkpoint_bytes: int = 16 << 20,
        preallocate_bytes: int = 1 << 20,
        strict: bool = False,
        replace_timeout: float = 2.0,
        fs: FileSystem | None = None,
    ) -> None:
        super().__init__(location, durability=durability, lock_timeout=lock_timeout, fs=fs)
        if publish_delay is not None and publish_delay < 0:
            raise ValueError("publish_delay must be None or not negative")
        self.publish_delay = publish_delay
        self.checkpoint_bytes = checkpoint_bytes
        self.preallocate_bytes = max(preallocate_bytes, 4096)
        self.strict = strict
        self.replace_timeout = replace_timeout
        self.directory = os.path.join(self.root, STATE_DIR, JOURNAL_DIR)
        self._writer = WriterLock(
            self.fs, os.path.join(self.directory, "writer.lock"), lock_timeout
        )
        self._group: GroupCommit[list[Change]] = GroupCommit(self._writer, self.commit_locked)
        # The log position and the committed changes since the last checkpoint, under _state.
        self._state = threading.RLock()
        self._header: SegmentHeader | None = None
        self._fd = -1
        self._offset = 0
        self._allocated = 0
        self._next_seq = 1
        self._torn = False
        self._index: dict[Key, bytes | None] = {}
        self._seqs: dict[Key, int] = {}
        # Documents committed by this object and not yet published, under _pending.
        self._pending = threading.Condition()
        self._dirty: dict[Key, int] = {}
        self._publisher: threading.Thread | None = None
        self._poison: BaseException | None = None
        self._closed = False

    @property
    def namespace(self) -> str:
        """Not the files' namespace: commits since the last checkpoint live in the log only."""
        return f"journal:{self.root}"

    # -- reading ------------------------------------------------------------------------
    def read(self, key: Key) -> bytes:
        self._check()
        with self._state:
            self._catch_up()
            if key in self._index:
                data = self._index[key]
                if data is None:
                    raise NotFoundError(key)
                return data
        return self._read_unlocked(key)

    def read_again(self, key: Key) -> bytes:
        """A document did not parse: repair what a crash left (under the writer lock), then read."""
        self._check()
        with self._writer:
            with self._state:
                self._catch_up_writer()
                torn = self._torn
            if torn:
                self._checkpoint_locked()
            return self.read(key)

    def exists(self, key: Key) -> bool:
        self._check()
        with self._state:
            self._catch_up()
            if key in self._index:
                return self._index[key] is not None
        return self.fs.exists(self.path(key))

    def read_many(self, keys: Iterable[Key]) -> dict[Key, bytes]:
        """One committed state: files read outside the lock are checked against the log after."""
        wanted = list(dict.fromkeys(keys))
        self._check()
        for _ in range(3):
            with self._state:
                self._catch_up()
                segment = self._segment
                found = {k: d for k in wanted if (d := self._index.get(k)) is not None}
                from_files = [k for k in wanted if k not in self._index]
            for key in from_files:
                with contextlib.suppress(NotFoundError):
                    found[key] = self._read_unlocked(key)
            with self._state:
                self._catch_up()
                if self._segment == segment and not any(k in self._index for k in from_files):
                    return found
        with self._writer:  # busy: stop the writers for a moment instead of retrying forever
            return {k: d for k in wanted if (d := self._read_or_none(k)) is not None}

    def _read_or_none(self, key: Key) -> bytes | None:
        try:
            return self.read(key)
        except NotFoundError:
            return None

    def list(self, prefix: Key) -> Iterator[Key]:
        self._check()
        with self._state:
            self._catch_up()
            index = dict(self._index)
        size = len(prefix)
        for key in super().list(prefix):
            if key not in index:
                yield key
        for key, data in index.items():
            if data is not None and key[:size] == prefix:
                yield key

    # -- writing ------------------------------------------------------------------------
    def write(self, key: Key, data: bytes) -> WriteOutcome:
        return self.commit([(key, data)])

    def remove(self, key: Key) -> bool:
        with self._writer:
            existed = self.exists(key)
            if existed:
                self.commit_locked([[(key, None)]])
            return existed

    def commit(self, changes: Sequence[Change]) -> WriteOutcome:
        """Commit ``changes`` all-or-nothing, sharing the flush with concurrent committers."""
        self._check()
        if self._writer.held:
            return self.commit_locked([list(changes)])
        self._group.submit(list(changes))
        return WriteOutcome(file_synced=self._sync, dir_synced=self._sync)

    @contextlib.contextmanager
    def lock(self, key: Key) -> Iterator[None]:
        """The writer lock: ``update()`` reads, computes and commits with every writer excluded."""
        self._check()
        with self._writer:
            yield

    @contextlib.contextmanager
    def begin(self) -> Iterator[BackendTransaction]:
        with self._writer:
            self._check()
            yield _Transaction(self)

    def commit_locked(self, batch: Sequence[Sequence[Change]]) -> WriteOutcome:
        """Under the writer lock: append each transaction of ``batch``, then flush once.

        Once the flush returned, the commit stands: a failure to publish its
        files afterwards is logged and retried, never reported as a failed commit.
        """
        self._check()
        with self._state:
            self._catch_up_writer()
            torn = self._torn
        if torn:  # never append after a torn tail: a later crash could not tell them apart
            self._checkpoint_locked()
        with self._state:
            assert self._header is not None
            salt, seq, offset, fd = self._header.salt, self._next_seq, self._offset, self._fd
        last = len(batch) - 1
        data = b"".join(
            records.frame(
                salt, seq + i, records.FULL, records.encode_changes(changes), batch_end=i == last
            )
            for i, changes in enumerate(batch)
        )
        try:
            self._reserve(fd, offset + len(data))
            self.fs.pwrite_all(fd, data, offset)
            if self._sync:
                self.fs.fsync(fd, full=self._full, data_only=True)
        except BaseException as exc:
            self._poison = exc
            raise
        try:
            with self._state:
                self._catch_up_writer()
                committed = {k: self._seqs[k] for c in batch for k, _ in c if k in self._seqs}
            with self._pending:
                if not self._dirty:  # the publisher sleeps until there is something to do
                    self._pending.notify()
                self._dirty.update(committed)
            if self.publish_delay is None:
                self._publish_pending()
                if self._offset >= self.checkpoint_bytes:
                    self._checkpoint_locked()
        except Exception:
            log.warning("journal at %s: a commit stands, its publication failed", self.root)
        return WriteOutcome(file_synced=self._sync, dir_synced=self._sync)

    def _reserve(self, fd: int, end: int) -> None:
        """Extend the zero-filled area so appends overwrite in place instead of growing the file.

        The size comes from the file, not from memory: other processes extend it too.
        """
        needed = end + _ROTATION_SIZE
        if needed <= self._allocated:
            return
        self._allocated = self.fs.fstat(fd).st_size
        if needed <= self._allocated:
            return
        grow = max(self.preallocate_bytes, needed - self._allocated + self.preallocate_bytes // 2)
        self.fs.pwrite_all(fd, bytes(grow), self._allocated)
        self._allocated += grow

    # -- following the log ----------------------------------------------------------------
    @property
    def _segment(self) -> int:
        return self._header.segment if self._header is not None else 0

    def _catch_up(self, *, writer: bool = False) -> None:
        """Fold in every transaction appended since the last look, following rotations.

        Call it holding ``_state``. Only a caller holding the writer lock passes
        ``writer``: for it, invalid bytes are a torn tail; for others they may be
        a record another process is writing right now.
        """
        assert self._header is not None
        if not any(self.fs.pread(self._fd, records.RECORD_HEADER_SIZE, self._offset)):
            return  # zeros or the end: nothing appended since the last look (most reads)
        window = _Window(self.fs, self._fd)
        while True:
            step = self._read_step(window)
            if step.kind == "commit":
                for key, data in records.decode_changes(step.payload):
                    self._index[key] = data
                    self._seqs[key] = step.seq
                self._offset, self._next_seq = step.offset, step.seq + 1
                self._torn = False
                continue
            if step.kind == "rotate" and records.decode_rotation(step.payload) > self._segment:
                self._switch_to(records.decode_rotation(step.payload))
            elif step.kind == "torn" and (self._read_pointer() or 0) > self._segment:
                self._switch_to(self._read_pointer())  # a checkpoint left this torn segment
            elif step.kind != "end" and writer:  # torn, or a rotation going backwards
                self._torn = True
                if self.strict:
                    self._refuse_corruption(window)
                return
            else:
                return
            window = _Window(self.fs, self._fd)

    def _read_step(self, window: _Window) -> records.Step:
        assert self._header is not None
        return records.read_step(window.pread, self._header.salt, self._offset, self._next_seq)

    def _catch_up_writer(self) -> None:
        self._catch_up(writer=True)

    def _refuse_corruption(self, window: _Window) -> None:
        assert self._header is not None
        end = self.fs.fstat(self._fd).st_size
        found = records.find_later_batch(
            window.pread, self._header.salt, self._offset, end, self._next_seq
        )
        if found is not None:
            raise CorruptJournalError(
                f"{self._segment_path(self._segment)}: invalid record at offset {self._offset}"
                f" followed by a later commit at {found} (strict recovery)"
            )

    def _switch_to(self, segment: int | None) -> None:
        """Continue the log in ``segment``; a checkpoint made everything before it durable."""
        while True:
            if segment is None:
                raise CorruptJournalError(f"{self.directory}: the checkpoint pointer is missing")
            try:
                fd, header, size = self._open_segment(segment)
                break
            except FileNotFoundError:  # removed by a later checkpoint: go where the pointer is
                newer = self._read_pointer()
                if newer is None or newer <= segment:
                    raise
                segment = newer
        self._adopt(fd, header, size)

    def _adopt(self, fd: int, header: SegmentHeader, size: int) -> None:
        old, self._fd = self._fd, fd
        self._header, self._offset, self._allocated = header, HEADER_SIZE, size
        self._next_seq = header.base_seq + 1
        self._index.clear()
        self._seqs.clear()
        self._torn = False
        if old >= 0:
            with contextlib.suppress(OSError):  # released even when close() reports an error
                self.fs.close(old)

    def _open_segment(self, segment: int) -> tuple[int, SegmentHeader, int]:
        path = self._segment_path(segment)
        fd = self.fs.open(path, READ_WRITE_FLAGS)
        try:
            header = SegmentHeader.decode(self.fs.pread(fd, HEADER_SIZE, 0))
            size = self.fs.fstat(fd).st_size
        except BaseException:
            self.fs.close(fd)
            raise
        if header is None or header.segment != segment:
            self.fs.close(fd)
            raise CorruptJournalError(f"{path}: not a journal segment header")
        return fd, header, size

    def _segment_path(self, segment: int) -> str:
        return os.path.join(self.directory, segment_name(segment))

    def _read_pointer(self) -> int | None:
        try:
            data = self.fs.read_file(os.path.join(self.directory, POINTER))
        except FileNotFoundError:
            return None
        try:
            segment = orjson.loads(data)["segment"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise CorruptJournalError(f"{self.directory}: unreadable checkpoint pointer") from exc
        if not isinstance(segment, int):
            raise CorruptJournalError(f"{self.directory}: unreadable checkpoint pointer")
        return segment

    # -- publishing and checkpoints ---------------------------------------------------------
    def temp_path(self, target: str) -> str:
        """Named apart from other backends' temporary files: only the journal may sweep them.

        They exist while the writer lock is held, not a document's lock, which is
        what the file backends' sweep takes.
        """
        head, tail = os.path.split(target)
        return os.path.join(head, f".{tail}.{os.urandom(8).hex()}{JOURNAL_TEMP_MARKER}")

    def temporary_file_lock(
        self, key: Key, marker: str
    ) -> contextlib.AbstractContextManager[None] | None:
        if marker == JOURNAL_TEMP_MARKER:
            return self._writer  # held by the writer of every journal temporary file
        return super().temporary_file_lock(key, marker)

    def _publish_file(self, key: Key, data: bytes | None, *, sync: bool) -> str:
        path = self.path(key)
        if data is None:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self.fs.unlink(path)
            return path
        self.fs.makedirs(os.path.dirname(path))
        self._replace_with(path, data, sync=sync)
        return path

    def _replace_with(self, path: str, data: bytes, *, sync: bool, mode: int = 0o666) -> None:
        """Write a temporary file beside ``path``, flush it if asked, rename it over ``path``."""
        temp = self.temp_path(path)
        try:
            fd = self.fs.open(temp, CREATE_EXCL_FLAGS, mode)
            try:
                self.fs.write_all(fd, data)
                if sync:
                    self.fs.fsync(fd, full=self._full)
            finally:
                self.fs.close(fd)
            self._replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.unlink(temp)
            raise

    def _publish_locked(self, keys: Iterable[Key]) -> None:
        """Under the writer lock: show the latest committed version of ``keys`` as files.

        A file may only show a commit that is durable in the log, or a crash could
        leave half a transaction in the files with no record to repair it from:
        without per-commit flushes (``durability="none"``) the log is flushed first.
        """
        if not self._sync:
            self._flush_log()
        with self._state:
            self._catch_up_writer()
            latest = {k: self._index[k] for k in keys if k in self._index}
        for key, data in latest.items():
            self._publish_file(key, data, sync=False)

    def _flush_log(self) -> None:
        try:
            self.fs.fsync(self._fd, full=self._full, data_only=True)
        except BaseException as exc:
            self._poison = exc
            raise

    def publish(self) -> None:
        """Publish every pending document now instead of after ``publish_delay``."""
        self._check()
        with self._writer:
            self._publish_pending()

    def _publish_pending(self) -> None:
        with self._pending:
            dirty = dict(self._dirty)
        with self._state:
            current = [k for k, seq in dirty.items() if self._seqs.get(k) == seq]
        self._publish_locked(current)
        with self._pending:
            for key, seq in dirty.items():
                if self._dirty.get(key) == seq:
                    del self._dirty[key]

    def checkpoint(self) -> None:
        """Make every document durable in its file, start a new segment and drop the old ones."""
        self._check()
        with self._writer:
            self._check()
            self._checkpoint_locked()

    def _checkpoint_locked(self) -> None:
        """Crash-safe at every step; see docs/journal.md, "Checkpoints"."""
        try:
            with self._state:
                if not self._torn:
                    self._catch_up_writer()
                latest = dict(self._index)
                old, old_fd, old_end = self._header, self._fd, self._offset
                next_seq, torn = self._next_seq, self._torn
            assert old is not None
            directories: set[str] = set()
            for key, data in latest.items():
                path = self._publish_file(key, data, sync=True)
                directories.update(self._ancestors(path))
            for directory in sorted(directories, key=len, reverse=True):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    self.fs.fsync_dir(directory, full=self._full)  # never created: removed first
            header = SegmentHeader.fresh(old.segment + 1, base_seq=next_seq - 1)
            fd, size = self._create_segment(header)
        except BaseException as exc:
            self._poison = exc
            raise
        adopted = False
        try:
            if not torn:  # the old segment points to the new one before the pointer does
                rotation = records.frame(
                    old.salt,
                    next_seq,
                    records.ROTATE,
                    records.encode_rotation(header.segment),
                    batch_end=True,
                )
                self.fs.pwrite_all(old_fd, rotation, old_end)
                self.fs.fsync(old_fd, full=self._full, data_only=True)
            self._write_pointer(header.segment)
            with self._state:
                self._adopt(fd, header, size)
            adopted = True
        except BaseException as exc:
            self._poison = exc
            raise
        finally:
            if not adopted:
                self.fs.close(fd)
        with self._pending:
            self._dirty.clear()
        self._remove_segments(keep=header.segment)

    def _ancestors(self, path: str) -> Iterator[str]:
        directory = os.path.dirname(path)
        while len(directory) >= len(self.root):
            yield directory
            directory = os.path.dirname(directory)

    def _create_segment(self, header: SegmentHeader) -> tuple[int, int]:
        path = self._segment_path(header.segment)
        with contextlib.suppress(FileNotFoundError):
            self.fs.unlink(path)  # left by a checkpoint that crashed before moving the pointer
        fd = self.fs.open(path, _NEW_SEGMENT_FLAGS, 0o644)
        try:
            data = header.encode()
            size = max(self.preallocate_bytes, len(data))
            self.fs.pwrite_all(fd, data + bytes(size - len(data)), 0)
            self.fs.fsync(fd, full=self._full)
            self.fs.fsync_dir(self.directory, full=self._full)
        except BaseException:
            self.fs.close(fd)
            raise
        return fd, size

    def _write_pointer(self, segment: int) -> None:
        pointer = os.path.join(self.directory, POINTER)
        self._replace_with(pointer, orjson.dumps({"segment": segment}), sync=True, mode=0o644)
        self.fs.fsync_dir(self.directory, full=self._full)

    def _remove_segments(self, keep: int) -> None:
        """Delete every segment but ``keep``, and the pointer's leftover temporary files."""
        for entry in self.fs.scandir(self.directory):
            stale_segment = entry.name.endswith(SEGMENT_SUFFIX) and entry.name != segment_name(keep)
            if entry.is_file and (stale_segment or entry.name.endswith(JOURNAL_TEMP_MARKER)):
                with contextlib.suppress(OSError):  # Windows refuses while a reader has it open
                    self.fs.unlink(os.path.join(self.directory, entry.name))

    # -- life cycle ---------------------------------------------------------------------------
    def recover(self) -> Sequence[Key]:
        """Open the log; replay and checkpoint whatever a previous run left in it."""
        self.fs.makedirs(self.directory, sync=True, full=self._full)
        with self._writer:
            repaired = self._recover_locked()
        if self.publish_delay is not None and self._publisher is None:
            self._publisher = threading.Thread(
                target=self._publish_loop, name=f"storage_shim journal {self.root}", daemon=True
            )
            self._publisher.start()
        return repaired

    def _recover_locked(self) -> Sequence[Key]:
        self.sweep_temporary_files()
        pointer = self._read_pointer()
        if pointer is None:  # the pointer is written before the first commit
            self._refuse_orphan_segments()
            for directory in (os.path.dirname(self.directory), self.root):
                self.fs.fsync_dir(directory, full=self._full)  # made earlier, maybe not durable
            header = SegmentHeader.fresh(1, base_seq=0)
            fd, size = self._create_segment(header)
            self._write_pointer(header.segment)
            with self._state:
                self._adopt(fd, header, size)
            self._remove_segments(keep=header.segment)
            return ()
        with self._state:
            self._adopt(*self._open_segment(pointer))
            self._catch_up_writer()
            repaired = sorted(self._index)
            needs_checkpoint = bool(self._index) or self._torn or self._segment != pointer
        if needs_checkpoint:
            self._checkpoint_locked()
        else:
            self._remove_segments(keep=pointer)
        return repaired

    def quarantine(self, key: Key, data: bytes) -> str | None:
        """A document the log holds is copied out and removed through the log; a file moves."""
        with self._writer:
            with self._state:
                self._catch_up_writer()
                logged = self._index.get(key)
            if logged is None:
                return super().quarantine(key, data)
            if logged != data:
                return None
            target = self.keep_in_quarantine(key, data)
            self.remove(key)
            return target

    def inspect(self) -> JournalState | None:
        """The log's state, changing nothing (``storage-shim doctor``); None without a journal.

        Call it on a backend the store has not opened (so not recovered): a
        running journal would lose its position, so it refuses. Without the
        writer lock, a commit in flight in another process looks like a torn tail.
        """
        if self._fd >= 0 or self._publisher is not None:
            raise UnsupportedOperationError("inspect() is for a journal no store has opened")
        try:
            entries = sorted(entry.name for entry in self.fs.scandir(self.directory))
        except FileNotFoundError:
            return None
        segments = tuple(name for name in entries if name.endswith(SEGMENT_SUFFIX))
        temporary = tuple(name for name in entries if name.endswith(JOURNAL_TEMP_MARKER))
        pointer = self._read_pointer()
        if pointer is None:
            return JournalState(self.directory, None, segments, 0, 0, {}, False, temporary)
        with self._state:
            self._adopt(*self._open_segment(pointer))
            try:
                self._catch_up_writer()
                assert self._header is not None
                return JournalState(
                    directory=self.directory,
                    pointer=pointer,
                    segments=segments,
                    commits=self._next_seq - 1 - self._header.base_seq,
                    log_bytes=self._offset - HEADER_SIZE,
                    documents=dict(self._index),
                    torn=self._torn,
                    temporary_files=temporary,
                )
            finally:
                self.fs.close(self._fd)
                self._fd, self._header = -1, None
                self._index.clear()
                self._seqs.clear()

    def _refuse_orphan_segments(self) -> None:
        """Without a pointer, segments may only be the empty first one of an interrupted start."""
        for entry in self.fs.scandir(self.directory):
            if not entry.name.endswith(SEGMENT_SUFFIX):
                continue
            try:
                number = int(entry.name.removesuffix(SEGMENT_SUFFIX))
                fd, header, _ = self._open_segment(number)
            except (ValueError, CorruptJournalError):
                continue
            try:
                window = _Window(self.fs, fd)
                step = records.read_step(
                    window.pread, header.salt, HEADER_SIZE, header.base_seq + 1
                )
            finally:
                self.fs.close(fd)
            if step.kind != "end":
                raise CorruptJournalError(
                    f"{self.directory}: the checkpoint pointer {POINTER!r} is missing but"
                    f" {entry.name} holds commits; restore the pointer, or move the journal"
                    " away to start afresh"
                )

    def _publish_loop(self) -> None:
        delay = self.publish_delay or 0.0
        backoff = 0.0
        while True:
            with self._pending:
                while not self._dirty and not self._closed:
                    self._pending.wait()
                deadline = time.monotonic() + delay + backoff  # let commits of a key coalesce
                while not self._closed and (remaining := deadline - time.monotonic()) > 0:
                    self._pending.wait(remaining)
                if self._closed:
                    return
            try:
                with self._writer:
                    if self._poison is not None or self._closed:
                        return
                    self._publish_pending()
                    if self._offset >= self.checkpoint_bytes:
                        self._checkpoint_locked()
                backoff = 0.0
            except Exception as exc:  # the log still holds everything: warn, retry later
                if self._poison is not None:
                    log.exception("journal at %s stopped publishing", self.root)
                    return
                log.warning("journal at %s could not publish: %r; retrying", self.root, exc)
                backoff = min(max(backoff * 2, 0.05), 1.0)

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError(f"the journal at {self.root} is closed")
        if self._poison is not None:
            raise BackendPoisonedError(
                f"the journal at {self.root} failed to write or flush ({self._poison!r});"
                " close and reopen the store to recover from what reached the disk"
            ) from self._poison

    def close(self) -> None:
        """Publish and checkpoint (unless poisoned), then release the log."""
        if self._closed:
            return
        with self._pending:
            self._closed = True
            self._pending.notify_all()
        if self._publisher is not None:
            self._publisher.join()
        try:
            if self._poison is None and self._header is not None:
                with self._writer:
                    with self._state:
                        self._catch_up_writer()
                        has_records = self._offset > HEADER_SIZE or self._torn
                    if has_records:
                        self._checkpoint_locked()
        finally:
            with self._state:
                if self._fd >= 0:
                    self.fs.close(self._fd)
                    self._fd = -1


@hookimpl
def storage_shim_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            "journal",
            JournalBackend,
            "redo log with transactions and group commit; files published by rename",
        )
    ]
