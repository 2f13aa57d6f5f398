"""The interposed entry points: ``builtins.open``/``io.open`` (and so ``pathlib``), ``os.fsync``.

Paths outside every root pay one prefix check: :func:`~.paths.absolute` returns
the usual absolute path unchanged, and the roots are compared with
``str.startswith``. Uninstalling puts the originals back unless something has
wrapped the shim's functions since; those then pass every call through.
"""

from __future__ import annotations

import builtins
import io
import os
import stat
import threading
from collections.abc import Callable
from typing import Any

from .handles import DESCRIPTORS, open_file, shim_busy
from .installation import Installation
from .paths import absolute, leads_through_link, parse_mode

Routes = tuple[tuple[str, Installation], ...]
_routes: Routes = ()
"""(root + separator, installation) of every installed root; replaced whole, read without a lock."""
_guard = threading.Lock()
_saved: dict[tuple[object, str], Any] = {}
_next_open: Callable[..., Any] = io.open
_next_fsync: Callable[[Any], None] = os.fsync
_next_fdatasync: Callable[[Any], None] = getattr(os, "fdatasync", os.fsync)


def shim_open(  # noqa: PLR0917  # open()'s own signature
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str, int], int] | None = None,
) -> Any:
    routes = _routes
    if routes and opener is None and closefd:
        path = absolute(file)
        if path is not None:
            for prefix, installation in routes:
                if path.startswith(prefix):
                    handle = _open_under(
                        installation,
                        path,
                        path[len(prefix) :],
                        file,
                        mode=mode,
                        buffering=buffering,
                        encoding=encoding,
                        errors=errors,
                        newline=newline,
                    )
                    if handle is not None:
                        return handle
                    break
    return _next_open(file, mode, buffering, encoding, errors, newline, closefd, opener)


shim_open.__name__ = shim_open.__qualname__ = "open"
shim_open.__doc__ = io.open.__doc__


def _open_under(
    installation: Installation,
    path: str,
    relative: str,
    file: object,
    *,
    mode: str,
    buffering: int,
    encoding: str | None,
    errors: str | None,
    newline: str | None,
) -> Any:
    """The shim's handle, or None to leave the call to the plain ``open()``."""
    parsed = parse_mode(mode)
    if (
        parsed is None
        or shim_busy()
        or type(buffering) is not int
        or (parsed.binary and (encoding, errors, newline) != (None, None, None))
    ):
        return None
    target = installation.target(relative)
    if target is None or leads_through_link(path, target.path):
        return None
    if not parsed.binary and buffering == 0:  # the plain open() would have truncated the file first
        raise ValueError("can't have unbuffered text I/O")
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        if parsed.kind != "r" and not os.path.isdir(os.path.dirname(path)):
            return None
    else:
        wanted = (os.R_OK if parsed.readable else 0) | (os.W_OK if parsed.writable else 0)
        if not stat.S_ISREG(st.st_mode) or not os.access(path, wanted):
            return None
    return open_file(
        target,
        parsed,
        file,
        buffering=buffering,
        encoding=encoding,
        errors=errors,
        newline=newline,
    )


def _commit_descriptor(fd: Any) -> None:
    """A commit point when ``fd`` (or the object whose ``fileno()`` it is) is a shim handle's."""
    fileno = getattr(fd, "fileno", None)
    number = fd if isinstance(fd, int) else fileno() if callable(fileno) else None
    session = DESCRIPTORS.get(number) if isinstance(number, int) else None
    if session is not None:
        session.commit(force=True)


def shim_fsync(fd: Any) -> None:
    if DESCRIPTORS:
        _commit_descriptor(fd)
    _next_fsync(fd)


def shim_fdatasync(fd: Any) -> None:
    if DESCRIPTORS:
        _commit_descriptor(fd)
    _next_fdatasync(fd)


shim_fsync.__name__ = shim_fsync.__qualname__ = "fsync"
shim_fdatasync.__name__ = shim_fdatasync.__qualname__ = "fdatasync"
_WRAPPERS: dict[tuple[object, str], Any] = {
    (builtins, "open"): shim_open,
    (io, "open"): shim_open,
    (os, "fsync"): shim_fsync,
}
if hasattr(os, "fdatasync"):
    _WRAPPERS[(os, "fdatasync")] = shim_fdatasync


def set_routes(routes: Routes) -> None:
    """Route the given roots through the shim; patch on the first, unpatch when none is left."""
    global _routes, _next_open, _next_fsync, _next_fdatasync  # noqa: PLW0603
    with _guard:
        if routes:
            for (module, name), wrapper in _WRAPPERS.items():
                if (module, name) not in _saved:
                    _saved[(module, name)] = getattr(module, name)
                    setattr(module, name, wrapper)
            _next_open = _saved[(builtins, "open")]
            _next_fsync = _saved[(os, "fsync")]
            _next_fdatasync = _saved.get((os, "fdatasync"), _next_fsync)
            _routes = routes
            return
        _routes = ()
        for (module, name), original in list(_saved.items()):
            if getattr(module, name) is _WRAPPERS[(module, name)]:
                setattr(module, name, original)
                del _saved[(module, name)]


def routes() -> Routes:
    return _routes
