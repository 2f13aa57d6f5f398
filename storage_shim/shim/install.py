"""``install()``/``patched()``: routing a root's files through the shim, and undoing it."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Self

from ..backend import Durability
from ..store import Store
from . import patch
from .errors import ShimInstallError
from .handles import flush_open_handles
from .installation import DEFAULT_JSON_SUFFIXES, DEFAULT_LINE_SUFFIXES, Installation, Settings

_lock = threading.Lock()
_installations: list[Installation] = []
_exit_hook_registered = False


class ShimHandle:
    """One :func:`install` call; :meth:`uninstall` undoes it (once; later calls do nothing).

    Installing a root that is already installed with the same settings shares
    its installation: the shim stays until every handle has uninstalled.
    """

    def __init__(self, installation: Installation) -> None:
        self._installation = installation
        self._installed = True

    @property
    def root(self) -> str:
        return self._installation.root

    @property
    def backend(self) -> str:
        return self._installation.settings.backend

    @property
    def installed(self) -> bool:
        return self._installed

    @property
    def store(self) -> Store:
        """The store the shim publishes through (the same documents, by key)."""
        return self._installation.store()

    def uninstall(self) -> None:
        with _lock:
            if not self._installed:
                return
            self._installed = False
            installation = self._installation
            installation.users -= 1
            if installation.users:
                return
            _installations.remove(installation)
            _route_all()
        installation.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def __repr__(self) -> str:
        state = "installed" if self._installed else "uninstalled"
        return f"<ShimHandle {self.root!r} backend={self.backend!r} {state}>"


def _route_all() -> None:
    patch.set_routes(
        tuple(
            (prefix, installation)
            for installation in _installations
            for spelling in installation.spellings
            for prefix in [spelling.rstrip(os.sep) + os.sep]
        )
    )


def _overlap(a: str, b: str) -> bool:
    a, b = a.rstrip(os.sep) + os.sep, b.rstrip(os.sep) + os.sep
    return a.startswith(b) or b.startswith(a)


def install(
    root: str | os.PathLike[str],
    backend: str = "atomic",
    *,
    durability: Durability = "fsync",
    json_suffixes: Iterable[str] = DEFAULT_JSON_SUFFIXES,
    line_suffixes: Iterable[str] = DEFAULT_LINE_SUFFIXES,
    **options: Any,
) -> ShimHandle:
    """Route the files below ``root`` that the shim manages through a store at ``root``.

    JSON files (``json_suffixes``) are published only when their content
    parses; line-oriented files (``line_suffixes``) a whole line at a time.
    ``durability`` and the remaining ``options`` (``lock_timeout``,
    ``plugins``, ...) go to :func:`storage_shim.open_store`. Raises
    :class:`ShimInstallError` when ``root`` overlaps a root installed with
    other settings, or inside or around another installed root.
    """
    os.makedirs(root, exist_ok=True)
    spelling = os.path.normcase(os.path.abspath(root))
    settings = Settings(
        root=os.path.normcase(os.path.realpath(root)),
        backend=backend,
        durability=durability,
        json_suffixes=tuple(json_suffixes),
        line_suffixes=tuple(line_suffixes),
        options=dict(options),
    )
    with _lock:
        for installation in _installations:
            if installation.root == settings.root and installation.settings == settings:
                installation.users += 1
                installation.spellings[spelling] = None
                _route_all()
                return ShimHandle(installation)
            if _overlap(installation.root, settings.root):
                raise ShimInstallError(
                    f"{settings.root} overlaps the shim's root {installation.root}, installed"
                    f" with other settings (backend {installation.settings.backend!r}); uninstall"
                    " it first or install the same settings"
                )
        installation = Installation(settings)
        installation.users = 1
        installation.spellings[spelling] = None
        _installations.append(installation)
        _route_all()
        _register_exit_hook()
    return ShimHandle(installation)


@contextlib.contextmanager
def patched(
    root: str | os.PathLike[str],
    backend: str = "atomic",
    *,
    durability: Durability = "fsync",
    json_suffixes: Iterable[str] = DEFAULT_JSON_SUFFIXES,
    line_suffixes: Iterable[str] = DEFAULT_LINE_SUFFIXES,
    **options: Any,
) -> Iterator[ShimHandle]:
    """``with patched(root, backend="journal"): ...``: :func:`install` for the block."""
    handle = install(
        root,
        backend,
        durability=durability,
        json_suffixes=json_suffixes,
        line_suffixes=line_suffixes,
        **options,
    )
    try:
        yield handle
    finally:
        handle.uninstall()


def installed_roots() -> list[str]:
    with _lock:
        return [installation.root for installation in _installations]


def _register_exit_hook() -> None:
    global _exit_hook_registered  # noqa: PLW0603
    if not _exit_hook_registered:
        atexit.register(flush_open_handles)
        _exit_hook_registered = True
