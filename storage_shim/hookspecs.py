"""The hooks: the contract between storage_shim and its plugins.

Implement any of these in a module or object marked with
:data:`storage_shim.hookimpl`, then either pass it to
``open_store(..., plugins=[...])`` or publish it under the ``storage_shim``
entry-point group. Hooks are called with keyword arguments, and an
implementation may accept any subset of them. Unless a hook says otherwise,
every implementation runs and the results are collected in a list.

Observer hooks (``after_*``, ``*_error``, ``store_*``) run after the fact;
if one raises, the caller gets a :class:`~storage_shim.PluginError`, and the
operation it observed has already happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .markers import hookspec

if TYPE_CHECKING:
    from ._types import Key
    from .backend import BackendSpec, Receipt
    from .errors import CorruptDocumentError, StorageError
    from .store import Store


@hookspec
def storage_shim_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Register backends.

    Return an iterable of :class:`~storage_shim.BackendSpec`. Called each time a
    store is opened and by :func:`~storage_shim.backend_specs`. The built-in
    backends register through this same hook. Two plugins registering one name
    make ``open_store`` raise :class:`~storage_shim.DuplicateBackendError`
    naming both.
    """


@hookspec(firstresult=True)
def storage_shim_route(key: Key, store: Store) -> str | None:
    """Choose the backend for ``key`` (a tuple of segments).

    Return a registered backend name that some plugin declares in
    ``storage_shim_route_targets``, or ``None`` to let another plugin decide.
    The first non-``None`` answer wins. The host's ``routes=`` mapping is the
    last implementation consulted (``trylast``), and the store's ``backend=``
    is used when every implementation returns ``None``. Keep it deterministic:
    a key keeps its backend for the life of the store, which remembers the
    answers for the last few thousand keys and asks again for the others.
    """


@hookspec
def storage_shim_route_targets(store: Store) -> Iterable[str]:  # type: ignore[empty-body]
    """Name every backend your ``storage_shim_route`` may return.

    The store opens these backends when it opens (so their crash recovery runs
    first) and lists their documents in :meth:`~storage_shim.Store.list`. A
    route to a backend that no plugin names here raises
    :class:`~storage_shim.PluginError`; names that are not registered raise
    :class:`~storage_shim.UnknownBackendError` when the store opens.
    """


@hookspec(firstresult=True)
def storage_shim_on_corrupt(store: Store, key: Key, error: CorruptDocumentError) -> str | None:
    """A document does not parse as JSON (``error`` says where and why): what now?

    Return ``"raise"`` to raise ``error`` to the caller (what happens when every
    implementation returns ``None``), or ``"quarantine"`` to move the bytes to
    the backend's quarantine (files: ``<location>/.storage_shim/quarantine/
    <timestamp>/<key path>.json``) and carry on as if the key were missing:
    ``read`` raises :class:`~storage_shim.NotFoundError`, ``get`` returns its
    default, ``update`` starts from its default and ``read_many`` leaves it
    out. Nothing is ever replaced by a default in place. Called after the
    store's read retries, so the bytes were corrupt each time; the first
    non-``None`` answer wins.
    """


@hookspec
def storage_shim_quarantined(store: Store, key: Key, error: CorruptDocumentError) -> None:
    """The corrupt document of ``key`` was moved to ``error.quarantined_to``."""


@hookspec
def storage_shim_store_opened(store: Store) -> None:
    """The store is open and its fallback backend is ready."""


@hookspec
def storage_shim_store_closing(store: Store) -> None:
    """The store is about to close its backends; the last moment to use it."""


@hookspec
def storage_shim_after_write(store: Store, key: Key, receipt: Receipt) -> None:
    """A document was written (also by ``update``); ``receipt`` says how."""


@hookspec
def storage_shim_after_remove(store: Store, key: Key, existed: bool) -> None:
    """``remove`` ran; ``existed`` tells whether there was a document to delete."""


@hookspec
def storage_shim_read_error(store: Store, key: Key, error: StorageError) -> None:
    """Reading ``key`` failed with ``error`` (corrupt document, I/O error, lock timeout).

    A lock timeout while ``update`` waits for the key's lock goes to
    ``storage_shim_write_error`` instead: nothing was read yet.

    Called just before the error is raised to the caller. A missing document is
    not an error here: ``get`` and ``update`` meet it routinely.
    """


@hookspec
def storage_shim_write_error(store: Store, key: Key, error: StorageError) -> None:
    """Writing or removing ``key`` failed with ``error``.

    The previous document is still in place, unless only the final directory
    ``fsync`` failed (see :class:`~storage_shim.StorageIOError`).
    """
