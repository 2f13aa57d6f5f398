"""The file objects ``open()`` returns under a root: the standard ``io`` stack over a private file.

Every handle writes to a private, anonymous file (a ``memfd`` on Linux), so
encodings, newlines, seek/tell, truncate and ``fileno()`` behave exactly as
they do on a plain file. The outermost object (text wrapper, buffered object,
or raw file for ``buffering=0``) turns the commit points into publications:
``flush()``, ``truncate()``, ``close()`` and ``os.fsync`` of its descriptor
(see :mod:`.patch`). The raw layer marks the handle dirty whenever bytes reach
the private file, so a flush with nothing new costs nothing.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, cast

from .content import parses_as_json, whole_lines_end
from .errors import InvalidContentError
from .paths import Mode
from .targets import Target, exists_error

DESCRIPTORS: dict[int, Session] = {}
"""Private descriptor -> its handle's session, for the ``os.fsync`` wrapper."""
_busy = threading.local()


@contextlib.contextmanager
def inside_shim() -> Iterator[None]:
    """While the shim itself works, its ``open()`` wrapper steps aside (no recursion)."""
    previous = getattr(_busy, "active", False)
    _busy.active = True
    try:
        yield
    finally:
        _busy.active = previous


def shim_busy() -> bool:
    return getattr(_busy, "active", False)


def _private_descriptor() -> int:
    """An anonymous read-write file that disappears with its last descriptor."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("storage-shim", os.MFD_CLOEXEC)
    if os.name == "nt":  # pragma: no cover
        path = os.path.join(tempfile.gettempdir(), f"storage-shim-{os.urandom(8).hex()}")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
        for name in ("O_BINARY", "O_NOINHERIT", "O_TEMPORARY"):
            flags |= getattr(os, name, 0)
        return os.open(path, flags, 0o600)
    fd, path = tempfile.mkstemp(prefix="storage-shim-")  # pragma: no cover
    os.unlink(path)  # pragma: no cover
    return fd  # pragma: no cover


def _set_append(fd: int) -> None:
    """``O_APPEND`` on the private file: writes of an ``a`` handle land at its end after a seek."""
    if sys.platform == "win32":  # pragma: no cover  # no fcntl: writes go to the position
        return
    import fcntl  # noqa: PLC0415  # POSIX only

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def _fill(fd: int, data: bytes) -> None:
    """Make ``data`` the private file's whole content (positional: ``O_APPEND`` may be set)."""
    os.ftruncate(fd, 0)
    view, offset = memoryview(data), 0
    while offset < len(data):
        offset += os.pwrite(fd, view[offset:], offset)


def _content(fd: int, start: int = 0) -> bytes:
    size = os.fstat(fd).st_size
    chunks, offset = [], start
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


class Session:
    """One handle's link to its target: what it published, and whether it holds news."""

    def __init__(
        self, target: Target, mode: Mode, fd: int, published: bytes, appended_from: int | None
    ) -> None:
        self.target = target
        self.mode = mode
        self.fd = fd
        self.published = published
        """What readers have from this handle: the content it loaded or last published."""
        self.appended_from = appended_from
        """Append handles of line files: the private offset published up to."""
        self.exclusive = mode.kind == "x" and target.policy == "json"
        """``x`` on a JSON file: no other writer may have created it by the first publication
        (a line file was created exclusively at ``open()``)."""
        self.encoding: str | None = None
        """A text handle's encoding: JSON is validated as ``json.load`` would read it back."""
        self.dirty = False
        self.quiet = False
        """Closing because of an exception: content that cannot be published is dropped silently."""
        self.closed = False
        self.lock = threading.RLock()
        self.top: weakref.ref[Any] | None = None

    # -- publishing -----------------------------------------------------------------------
    def commit(self, *, force: bool = False, final: bool = False) -> None:
        """A commit point: publish what the private file holds, if it may be published."""
        if self.closed or not self.mode.writable or not (self.dirty or force):
            return
        with self.lock, inside_shim():
            if self.appended_from is not None:
                self._commit_appended(final)
            else:
                self._commit_whole(final)

    def _commit_whole(self, final: bool) -> None:
        content = _content(self.fd)
        if content == self.published:
            self.dirty = False
            return
        publish = content
        if self.target.policy == "json":
            if not parses_as_json(content, self.encoding):
                self.dirty = True
                if final and not self.quiet:
                    raise InvalidContentError(self.target.path, content, "JSON")
                return
        elif not final or self.quiet:
            publish = content[: whole_lines_end(content)]
            if publish == self.published:
                self.dirty = True
                return
        self.target.replace(publish, exclusive=self.exclusive)
        self.exclusive = False
        self.published = publish
        self.dirty = publish != content

    def _commit_appended(self, final: bool) -> None:
        assert self.appended_from is not None
        fresh = _content(self.fd, self.appended_from)
        end = len(fresh) if final and not self.quiet else whole_lines_end(fresh)
        if end:
            self.target.append(fresh[:end])
            self.appended_from += end
        self.dirty = end < len(fresh)

    def check_truncate(self, size: int) -> None:
        if self.appended_from is not None and size < self.appended_from:
            raise io.UnsupportedOperation(
                f"{self.target.path}: an append handle of a line-oriented file cannot truncate"
                " lines it has already published"
            )

    # -- reading the latest ---------------------------------------------------------------
    def refresh(self) -> bool:
        """On ``seek(0)`` of a handle with nothing unpublished: load the latest published content.

        Returns whether the private file changed.
        """
        if self.closed or not self.mode.readable or self.mode.kind in "wx":
            return False
        with self.lock, inside_shim():
            if self.dirty:
                return False
            current = self.published
            if self.mode.writable:
                current = _content(self.fd)
                unpublished = (
                    len(current) != self.appended_from
                    if self.appended_from is not None
                    else current != self.published
                )
                if unpublished:
                    return False
            latest = self.target.read()
            if latest is None or latest == current:
                return False
            _fill(self.fd, latest)
            self.published = latest
            if self.appended_from is not None:
                self.appended_from = len(latest)
            return True

    def release(self) -> None:
        self.closed = True
        DESCRIPTORS.pop(self.fd, None)


if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

    _Outer = io.IOBase
else:
    _Outer = object


class _PrivateRaw(io.FileIO):
    """The private file; marks the session dirty when bytes reach it."""

    _shim: Session

    def write(self, b: ReadableBuffer, /) -> int:
        written = super().write(b)
        self._shim.dirty = True
        return written

    def truncate(self, size: int | None = None, /) -> int:
        result = super().truncate(size)
        self._shim.dirty = True
        return result


class _Publishing(_Outer):
    """The outermost object of a shim handle: its commit points publish."""

    _shim: Session

    def flush(self) -> None:
        super().flush()
        self._shim.commit()

    def truncate(self, size: int | None = None, /) -> int:
        if self._shim.appended_from is not None:
            self._shim.check_truncate(self.tell() if size is None else size)
        result = super().truncate(size)
        self._shim.commit(force=True)
        return result

    def seek(self, offset: int, whence: int = 0, /) -> int:
        if offset == 0 and whence == 0:
            self.flush()
            if self._shim.refresh():
                self._drop_read_ahead()
        return super().seek(offset, whence)

    def _drop_read_ahead(self) -> None:
        """Make the buffered layer forget what it read of the previous content."""

    def close(self) -> None:
        session: Session | None = getattr(self, "_shim", None)
        if self.closed or session is None:
            super().close()
            return
        try:
            super().flush()
            session.commit(force=True, final=True)
        finally:
            session.release()
            super().close()

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is not None:
            self._shim.quiet = True
        self.close()


class ShimTextFile(_Publishing, io.TextIOWrapper):
    def _drop_read_ahead(self) -> None:
        cast(io.BufferedIOBase, self.buffer).seek(0, io.SEEK_END)


class _BufferedPublishing(_Publishing):
    def _drop_read_ahead(self) -> None:
        super().seek(0, io.SEEK_END)


class ShimBufferedRandom(_BufferedPublishing, io.BufferedRandom):
    pass


class ShimBufferedWriter(_BufferedPublishing, io.BufferedWriter):
    pass


class ShimBufferedReader(_BufferedPublishing, io.BufferedReader):
    pass


class ShimRawFile(_Publishing, _PrivateRaw):
    pass


def _buffered_class(mode: Mode, outermost: bool) -> type[io.BufferedIOBase]:
    if mode.plus:
        return ShimBufferedRandom if outermost else io.BufferedRandom
    if mode.writable:
        return ShimBufferedWriter if outermost else io.BufferedWriter
    return ShimBufferedReader if outermost else io.BufferedReader


def _initial_state(target: Target, mode: Mode, shown: str) -> tuple[bytes, int | None]:
    """(content the handle starts with, the offset appends are published from)."""
    kind = mode.kind
    if kind == "r":
        data = target.read()
        if data is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), shown)
        return data, None
    if kind == "x" and target.exists():
        raise exists_error(shown)
    if kind in "wx":
        return b"", None
    data = target.read() or b""
    return data, len(data) if target.policy == "lines" else None


def open_file(
    target: Target,
    mode: Mode,
    file: object,
    *,
    buffering: int,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
) -> IO[Any]:
    """The shim's ``open()`` for a file it manages; the arguments are ``open()``'s."""
    if mode.binary and buffering == 1:
        warnings.warn(
            "line buffering (buffering=1) isn't supported in binary mode, the default buffer"
            " size will be used",
            RuntimeWarning,
            stacklevel=3,
        )
    shown = os.fsdecode(os.fspath(file))  # type: ignore[call-overload]
    with inside_shim():
        content, appended_from = _initial_state(target, mode, shown)
        if target.policy == "lines" and mode.kind != "r":
            target.create(mode.kind)
    fd = _private_descriptor()
    try:
        _fill(fd, content)
        if mode.kind == "a":
            _set_append(fd)
        session = Session(target, mode, fd, content, appended_from)
        unbuffered = mode.binary and buffering == 0
        raw = (ShimRawFile if unbuffered else _PrivateRaw)(fd, mode.raw)
    except BaseException:
        os.close(fd)
        raise
    raw._shim = session
    try:
        top = _build(
            raw, mode, file, buffering=buffering, encoding=encoding, errors=errors, newline=newline
        )
    except BaseException:
        io.FileIO.close(raw)
        raise
    session.top = weakref.ref(top)
    DESCRIPTORS[fd] = session
    return cast(IO[Any], top)


def _build(
    raw: _PrivateRaw,
    mode: Mode,
    file: object,
    *,
    buffering: int,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
) -> Any:
    raw.name = os.fspath(file)  # type: ignore[call-overload]  # FileIO keeps it in its __dict__
    if isinstance(raw, ShimRawFile):
        return raw
    size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
    buffer: Any = _buffered_class(mode, outermost=mode.binary)(raw, size)  # type: ignore[call-arg]
    if mode.binary:
        buffer._shim = raw._shim
        return buffer
    text = ShimTextFile(buffer, encoding, errors, newline, line_buffering=buffering == 1)
    text._shim = raw._shim
    text._shim.encoding = text.encoding
    text.mode = mode.text  # type: ignore[misc]
    return text


def flush_open_handles() -> None:
    """At exit: publish what live handles hold, as the buffers of plain files are written.

    Content that cannot be published is reported on standard error.
    """
    for session in list(DESCRIPTORS.values()):
        top = session.top() if session.top is not None else None
        if top is None or top.closed or not session.mode.writable:
            continue
        try:
            top.flush()
            session.commit(force=True, final=True)
        except Exception as exc:  # one handle's failure must not stop the others
            print(f"storage_shim.shim: at exit: {exc}", file=sys.stderr)
