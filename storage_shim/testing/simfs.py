"""An in-memory POSIX file system that logs every mutation with what makes it durable.

:class:`SimFS` overrides every primitive of :class:`storage_shim.fs.FileSystem`.
It keeps two layers:

* the volatile tree (:attr:`SimFS.image`), what a running process sees, and
* the log of mutating operations since the last durable base
  (:attr:`SimFS.log`), each with the flush that makes it durable: a file's
  data, size and mode once that inode is fsynced; a directory entry (create,
  mkdir, rename, unlink) once its parent directory is fsynced. This is the weak
  persistence model of ALICE (Pillai et al., OSDI 2014, section 3), in which
  only fsync orders anything; :mod:`storage_shim.testing.crash` turns the log
  into the crash states it allows.

Operations name inodes, not paths, so that any subset of the log can be
replayed. Each operation lists the earlier operations it cannot persist
without (a rename needs the creation of its source name, a create into a name
needs the unlink that freed it, anything in a new directory needs its mkdir).

Not modelled: symbolic links, hard links (no primitive makes them), timestamps
and ownership. ``lock`` is an in-process lock that, like filelock, creates the
lock file and its missing directories (unsynced) when first entered.
:func:`forbid_real_io` makes the real ``os`` calls a backend could use to
bypass the file-system object fail loudly.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..fs import Entry, FileSystem

ROOT_INO = 1
UMASK = 0o022
_ACCESS = os.O_RDONLY | os.O_WRONLY | os.O_RDWR


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


# -- the tree -------------------------------------------------------------------------
@dataclass
class Node:
    kind: Literal["file", "dir"]
    mode: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)

    def copy(self) -> Node:
        return Node(self.kind, self.mode, bytearray(self.data), dict(self.entries))


@dataclass
class Image:
    """A whole tree: nodes by inode number, ``/`` being :data:`ROOT_INO`."""

    nodes: dict[int, Node] = field(default_factory=lambda: {ROOT_INO: Node("dir", 0o755)})
    next_ino: int = ROOT_INO + 1

    def copy(self) -> Image:
        return Image({ino: node.copy() for ino, node in self.nodes.items()}, self.next_ino)

    def lookup(self, path: str) -> tuple[int, str, int | None]:
        """``(parent inode, name, inode or None)``; raises like ``lstat`` on a bad parent."""
        if not path.startswith("/"):
            raise _error(errno.ENOENT, path)
        parts = [part for part in path.split("/") if part and part != "."]
        if not parts:
            return ROOT_INO, "", ROOT_INO
        parent = ROOT_INO
        for part in parts[:-1]:
            node = self.nodes[parent]
            child = node.entries.get(part)
            if child is None:
                raise _error(errno.ENOENT, path)
            if self.nodes[child].kind != "dir":
                raise _error(errno.ENOTDIR, path)
            parent = child
        return parent, parts[-1], self.nodes[parent].entries.get(parts[-1])

    def existing(self, path: str) -> int:
        ino = self.lookup(path)[2]
        if ino is None:
            raise _error(errno.ENOENT, path)
        return ino

    def node(self, ino: int) -> Node:
        """The node, created empty if an operation reaches an inode whose creation was lost."""
        node = self.nodes.get(ino)
        if node is None:
            node = self.nodes[ino] = Node("file", 0o644)
        return node

    def walk(self) -> Iterator[tuple[str, int, Node]]:
        """Every reachable ``(path, inode, node)``, parents first, names sorted."""
        pending = [("/", ROOT_INO)]
        while pending:
            path, ino = pending.pop()
            node = self.nodes[ino]
            yield path, ino, node
            for name in sorted(node.entries, reverse=True):
                child = os.path.join(path, name)
                pending.append((child, node.entries[name]))

    def digest(self) -> str:
        """Equal for trees a program cannot tell apart (inode numbers aside)."""
        h = hashlib.blake2b(digest_size=16)
        seen: dict[int, str] = {}
        for path, ino, node in self.walk():
            first = seen.setdefault(ino, path)
            h.update(f"{path}\0{node.kind}\0{node.mode:o}\0{first}\0{len(node.data)}\0".encode())
            if node.kind == "file" and first == path:
                h.update(node.data)
        return h.hexdigest()

    def files(self) -> dict[str, bytes]:
        """Every regular file's content, by path (for messages and tests)."""
        return {path: bytes(node.data) for path, _, node in self.walk() if node.kind == "file"}

    def makedirs(self, path: str) -> None:
        parent = ROOT_INO
        for part in (part for part in path.split("/") if part):
            child = self.nodes[parent].entries.get(part)
            if child is None:
                child = self.next_ino
                self.next_ino += 1
                self.nodes[child] = Node("dir", 0o755)
                self.nodes[parent].entries[part] = child
            parent = child


# -- the log --------------------------------------------------------------------------
@dataclass(frozen=True)
class Create:
    parent: int
    name: str
    ino: int
    mode: int

    def apply(self, image: Image) -> bool:
        entries = image.nodes[self.parent].entries
        if self.name in entries:
            return False
        image.nodes.setdefault(self.ino, Node("file", self.mode))
        entries[self.name] = self.ino
        return True


@dataclass(frozen=True)
class Mkdir:
    parent: int
    name: str
    ino: int
    mode: int

    def apply(self, image: Image) -> bool:
        entries = image.nodes[self.parent].entries
        if self.name in entries:
            return False
        image.nodes[self.ino] = Node("dir", self.mode)
        entries[self.name] = self.ino
        return True


@dataclass(frozen=True)
class Rename:
    src_parent: int
    src_name: str
    dst_parent: int
    dst_name: str
    ino: int

    def apply(self, image: Image) -> bool:
        source = image.nodes[self.src_parent].entries
        if source.get(self.src_name) != self.ino:
            return False
        del source[self.src_name]
        image.nodes[self.dst_parent].entries[self.dst_name] = self.ino
        return True


@dataclass(frozen=True)
class Unlink:
    parent: int
    name: str
    ino: int

    def apply(self, image: Image) -> bool:
        entries = image.nodes[self.parent].entries
        if entries.get(self.name) != self.ino:
            return False
        del entries[self.name]
        return True


@dataclass(frozen=True)
class Write:
    ino: int
    offset: int
    data: bytes

    def apply(self, image: Image) -> bool:
        data = image.node(self.ino).data
        end = self.offset + len(self.data)
        if len(data) < self.offset:
            data.extend(bytes(self.offset - len(data)))
        data[self.offset : end] = self.data
        return True


@dataclass(frozen=True)
class Truncate:
    ino: int
    size: int

    def apply(self, image: Image) -> bool:
        data = image.node(self.ino).data
        if len(data) > self.size:
            del data[self.size :]
        else:
            data.extend(bytes(self.size - len(data)))
        return True


@dataclass(frozen=True)
class Chmod:
    ino: int
    mode: int

    def apply(self, image: Image) -> bool:
        image.node(self.ino).mode = self.mode
        return True


@dataclass(frozen=True)
class Sync:
    """An fsync of a file or a directory: makes the earlier operations it covers durable."""

    ino: int

    def apply(self, image: Image) -> bool:
        return True


Op = Create | Mkdir | Rename | Unlink | Write | Truncate | Chmod | Sync


def flushed_by(op: Op) -> frozenset[int]:
    """The inodes that must all be fsynced after ``op`` for it to be durable."""
    match op:
        case Create() | Mkdir() | Unlink():
            return frozenset({op.parent})
        case Rename():
            return frozenset({op.src_parent, op.dst_parent})
        case Write() | Truncate() | Chmod():
            return frozenset({op.ino})
        case Sync():
            return frozenset()


@dataclass(frozen=True)
class Record:
    """One logged operation: the op, the earlier records it needs, and what it did by path."""

    index: int
    op: Op
    deps: frozenset[int]
    label: str


# -- the file system ------------------------------------------------------------------
@dataclass
class _Open:
    ino: int
    flags: int
    path: str
    position: int = 0


class SimFS(FileSystem):
    """The simulated file system; ``image`` is the base tree (copied), the log starts empty."""

    def __init__(self, image: Image | None = None) -> None:
        self.image = image.copy() if image is not None else Image()
        self.log: list[Record] = []
        self._fds: dict[int, _Open] = {}
        self._next_fd = 1000
        self._guard = threading.RLock()
        self._locks: dict[str, threading.Lock] = {}
        self._origin: dict[tuple[int, str], int] = {}  # record that last changed an entry
        self._made: dict[int, int] = {}  # directory inode -> the mkdir record

    # -- the log --------------------------------------------------------------------
    def mark_durable(self) -> None:
        """Everything so far becomes the durable base, as after ``sync(2)``."""
        with self._guard:
            self.log.clear()
            self._origin.clear()
            self._made.clear()

    def _record(self, op: Op, label: str, *deps: int | None) -> None:
        index = len(self.log)
        needed = frozenset(d for d in deps if d is not None)
        self.log.append(Record(index, op, needed, label))
        op.apply(self.image)
        match op:
            case Create() | Mkdir() | Unlink():
                self._origin[(op.parent, op.name)] = index
                if isinstance(op, Mkdir):
                    self._made[op.ino] = index
            case Rename():
                self._origin[(op.src_parent, op.src_name)] = index
                self._origin[(op.dst_parent, op.dst_name)] = index
            case _:
                pass

    def _new_ino(self) -> int:
        ino = self.image.next_ino
        self.image.next_ino += 1
        return ino

    def _file(self, fd: int) -> _Open:
        handle = self._fds.get(fd)
        if handle is None:
            raise _error(errno.EBADF, f"<fd {fd}>")
        return handle

    # -- primitives -----------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        with self._guard:
            parent, name, ino = self.image.lookup(path)
            writable = flags & _ACCESS != os.O_RDONLY
            if ino is None:
                if not flags & os.O_CREAT:
                    raise _error(errno.ENOENT, path)
                ino = self._new_ino()
                created = mode & ~UMASK & 0o7777
                self._record(
                    Create(parent, name, ino, created),
                    f"create {path}",
                    self._origin.get((parent, name)),
                    self._made.get(parent),
                )
            else:
                if flags & os.O_CREAT and flags & os.O_EXCL:
                    raise _error(errno.EEXIST, path)
                if self.image.nodes[ino].kind == "dir":
                    if writable:
                        raise _error(errno.EISDIR, path)
                elif flags & os.O_TRUNC and writable and self.image.nodes[ino].data:
                    self._record(Truncate(ino, 0), f"truncate {path} to 0")
            fd = self._next_fd
            self._next_fd += 1
            self._fds[fd] = _Open(ino, flags, path)
            return fd

    def close(self, fd: int) -> None:
        with self._guard:
            self._file(fd)
            del self._fds[fd]

    def write(self, fd: int, data: memoryview) -> int:
        with self._guard:
            handle = self._file(fd)
            offset = handle.position
            if handle.flags & os.O_APPEND:
                offset = len(self.image.nodes[handle.ino].data)
            written = self._pwrite(handle, data, offset)
            handle.position = offset + written
            return written

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        with self._guard:
            return self._pwrite(self._file(fd), data, offset)

    def _pwrite(self, handle: _Open, data: memoryview, offset: int) -> int:
        if handle.flags & _ACCESS == os.O_RDONLY:
            raise _error(errno.EBADF, handle.path)
        payload = bytes(data)
        if payload:
            where = f"{handle.path}[{offset}:{offset + len(payload)}]"
            self._record(Write(handle.ino, offset, payload), f"write {where}")
        return len(payload)

    def read(self, fd: int, size: int) -> bytes:
        with self._guard:
            handle = self._file(fd)
            chunk = self._pread(handle, size, handle.position)
            handle.position += len(chunk)
            return chunk

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        with self._guard:
            return self._pread(self._file(fd), size, offset)

    def _pread(self, handle: _Open, size: int, offset: int) -> bytes:
        if handle.flags & _ACCESS == os.O_WRONLY:
            raise _error(errno.EBADF, handle.path)
        node = self.image.nodes[handle.ino]
        if node.kind == "dir":
            raise _error(errno.EISDIR, handle.path)
        return bytes(node.data[offset : offset + size])

    def fstat(self, fd: int) -> os.stat_result:
        with self._guard:
            ino = self._file(fd).ino
            return self._stat(ino)

    def _stat(self, ino: int) -> os.stat_result:
        node = self.image.nodes[ino]
        kind = stat.S_IFDIR if node.kind == "dir" else stat.S_IFREG
        size = len(node.data) if node.kind == "file" else 4096
        return os.stat_result((kind | node.mode, ino, 1, 1, 0, 0, size, 0, 0, 0))

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        with self._guard:
            handle = self._file(fd)
            self._record(Sync(handle.ino), f"fsync {handle.path}")

    def ftruncate(self, fd: int, length: int) -> None:
        with self._guard:
            handle = self._file(fd)
            if handle.flags & _ACCESS == os.O_RDONLY:
                raise _error(errno.EINVAL, handle.path)
            if len(self.image.nodes[handle.ino].data) != length:
                self._record(Truncate(handle.ino, length), f"truncate {handle.path} to {length}")

    def chmod(self, path: str, mode: int) -> None:
        with self._guard:
            ino = self.image.existing(path)
            self._record(Chmod(ino, mode & 0o7777), f"chmod {path} {mode:o}")

    def fsync_dir(self, path: str, *, full: bool = False) -> bool:
        with self._guard:
            ino = self.image.existing(path)
            if self.image.nodes[ino].kind != "dir":
                raise _error(errno.ENOTDIR, path)
            self._record(Sync(ino), f"fsync directory {path}")
            return True

    def replace(self, src: str, dst: str) -> None:
        with self._guard:
            src_parent, src_name, ino = self.image.lookup(src)
            if ino is None:
                raise _error(errno.ENOENT, src)
            dst_parent, dst_name, target = self.image.lookup(dst)
            if target == ino:
                return
            moving_dir = self.image.nodes[ino].kind == "dir"
            if target is not None:
                target_dir = self.image.nodes[target].kind == "dir"
                if target_dir and not moving_dir:
                    raise _error(errno.EISDIR, dst)
                if moving_dir and not target_dir:
                    raise _error(errno.ENOTDIR, dst)
                if target_dir and self.image.nodes[target].entries:
                    raise _error(errno.ENOTEMPTY, dst)
            self._record(
                Rename(src_parent, src_name, dst_parent, dst_name, ino),
                f"rename {src} -> {dst}",
                self._origin.get((src_parent, src_name)),
                self._made.get(dst_parent),
            )

    def unlink(self, path: str) -> None:
        with self._guard:
            parent, name, ino = self.image.lookup(path)
            if ino is None:
                raise _error(errno.ENOENT, path)
            if self.image.nodes[ino].kind == "dir":
                raise _error(errno.EISDIR, path)
            self._record(
                Unlink(parent, name, ino), f"unlink {path}", self._origin.get((parent, name))
            )

    def link(self, src: str, dst: str) -> None:
        """Not simulated: no backend step the crash states cover makes a second name."""
        raise _error(errno.EPERM, dst)

    def mkdir(self, path: str) -> None:
        with self._guard:
            parent, name, ino = self.image.lookup(path)
            if ino is not None:
                raise _error(errno.EEXIST, path)
            self._record(
                Mkdir(parent, name, self._new_ino(), 0o755),
                f"mkdir {path}",
                self._origin.get((parent, name)),
                self._made.get(parent),
            )

    def lstat(self, path: str) -> os.stat_result:
        with self._guard:
            return self._stat(self.image.existing(path))

    def lock(self, path: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        return _SimLock(self, lock, path, timeout)

    def _create_lock_file(self, path: str) -> None:
        with self._guard:
            missing, parent = [], os.path.dirname(path)
            while self._lookup_or_none(parent) is None:
                missing.append(parent)
                parent = os.path.dirname(parent)
            for directory in reversed(missing):
                self.mkdir(directory)
            if self.image.lookup(path)[2] is None:
                self.close(self.open(path, os.O_RDWR | os.O_CREAT, 0o644))

    def _lookup_or_none(self, path: str) -> int | None:
        try:
            return self.image.lookup(path)[2]
        except FileNotFoundError:
            return None

    def scandir(self, path: str) -> Iterator[Entry]:
        with self._guard:
            node = self.image.nodes[self.image.existing(path)]
            if node.kind != "dir":
                raise _error(errno.ENOTDIR, path)
            listing = [
                Entry(
                    name, self.image.nodes[ino].kind == "dir", self.image.nodes[ino].kind == "file"
                )
                for name, ino in sorted(node.entries.items())
            ]
        yield from listing


class _SimLock:
    """Like the real lock object (filelock): reusable; entering creates the lock file and its
    missing directories, unsynced, and waits on an in-process lock."""

    def __init__(self, fs: SimFS, lock: threading.Lock, path: str, timeout: float) -> None:
        self.fs, self.lock, self.path, self.timeout = fs, lock, path, timeout

    def __enter__(self) -> None:
        self.fs._create_lock_file(self.path)
        timeout = self.timeout
        if timeout == 0:
            acquired = self.lock.acquire(blocking=False)
        else:
            acquired = self.lock.acquire(timeout=timeout if timeout > 0 else -1)
        if not acquired:
            raise TimeoutError(errno.EAGAIN, f"lock {self.path} not acquired in {timeout}s")

    def __exit__(self, *exc_info: object) -> None:
        self.lock.release()


# -- real I/O forbidden ---------------------------------------------------------------
class BypassError(AssertionError):
    """A backend called the operating system directly instead of its file-system object."""


FORBIDDEN_OS_CALLS = (
    "open", "write", "pwrite", "writev", "pwritev", "read", "pread", "fsync", "fdatasync",
    "ftruncate", "truncate", "replace", "rename", "renames", "unlink", "remove", "rmdir",
    "mkdir", "makedirs", "chmod", "link", "symlink", "sendfile", "copy_file_range",
)  # fmt: skip
"""What a backend could write or flush with. ``stat``, ``scandir`` and ``close`` stay
allowed: the plugin machinery reads installed metadata while a store opens."""

_WRITE_MODES = frozenset("wax+")


@contextlib.contextmanager
def forbid_real_io(bypasses: list[str]) -> Iterator[None]:
    """Make writing and flushing through ``os`` or ``open()`` raise :class:`BypassError`.

    Each refused call is also appended to ``bypasses``, in case the backend
    swallows the error.
    """
    saved: list[tuple[Any, str, Any]] = []

    def refuse(name: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            shown = f"{name}({', '.join(map(repr, args[:2]))})"
            bypasses.append(shown)
            raise BypassError(f"{shown} bypasses the file-system object")

        return refused

    real_open = builtins.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _WRITE_MODES & set(mode):
            return refuse("open")(file, mode)
        return real_open(file, mode, *args, **kwargs)

    for name in FORBIDDEN_OS_CALLS:
        if hasattr(os, name):
            saved.append((os, name, getattr(os, name)))
            setattr(os, name, refuse(f"os.{name}"))
    saved.append((builtins, "open", real_open))
    builtins.open = guarded_open
    try:
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)
