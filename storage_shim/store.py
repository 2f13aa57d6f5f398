"""The Store: keys, JSON, routing, hooks, retries and receipts over pluggable backends."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import operator
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Self, TypeVar

import pluggy

from . import codec
from ._threads import ThreadFlag, ThreadKeys
from ._types import Key, KeyLike
from .backend import (
    DURABILITY_LEVELS,
    Backend,
    BackendSpec,
    Durability,
    Receipt,
    WriteOutcome,
    accepted_options,
)
from .backends.files import STATE_DIR
from .backends.journal import JOURNAL_DIR, POINTER, JournalBackend
from .errors import (
    CorruptDocumentError,
    InvalidLocationError,
    InvalidOptionError,
    NotFoundError,
    PluginError,
    StorageError,
    StorageIOError,
    StoreClosedError,
    UnknownBackendError,
    UnsupportedOperationError,
)
from .fs import FileSystem
from .keys import format_key, parse_key, parse_prefix
from .locations import redact, uri_scheme
from .plugins import collect_backend_specs, get_plugin_manager
from .routing import HostRoutes, Routes
from .transaction import Transaction

T = TypeVar("T")
DEFAULT_BACKEND = "atomic"
JOURNAL = "journal"
_ROUTES_REMEMBERED = 4096
logger = logging.getLogger("storage_shim")
_MISSING: Any = object()
_READ_ERROR = "storage_shim_read_error"
_WRITE_ERROR = "storage_shim_write_error"


class _Quarantined(NotFoundError):
    """The document was corrupt and a hook moved it aside: the key reads as missing."""


class Store:
    """JSON documents keyed by path segments. Create one with :func:`open_store`.

    Thread-safe: one store may be shared by every thread of a process, and any
    number of stores, in any number of processes, may open the same location.
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        backend: str | None,
        durability: Durability,
        routes: Routes,
        plugin_manager: pluggy.PluginManager,
        read_retries: int,
        read_retry_delay: float,
        options: Mapping[str, Any],
    ) -> None:
        self.location = location
        self.default_backend = backend or "?"  # decided below, once the specs are known
        self._closed = False
        self._backends: dict[str, Backend] = {}
        self.durability: Durability = durability
        self.routes = routes
        self.plugin_manager = plugin_manager
        self.hook = plugin_manager.hook
        self.read_retries = read_retries
        self.read_retry_delay = read_retry_delay
        self.specs: Mapping[str, BackendSpec] = collect_backend_specs(plugin_manager)
        self.default_backend = self._backend_for_location(backend)
        self._options = dict(options)
        self._guard = threading.Lock()
        self._updating = ThreadKeys()  # keys whose update() fn this thread is running
        self._transacting = ThreadFlag()  # this thread has a transaction open
        self._routed: dict[Key, str] = {}
        self.targets: frozenset[str] = self._collect_targets()
        self._check_options()

    # -- backends ---------------------------------------------------------------------
    def _spec(self, name: str) -> BackendSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise UnknownBackendError(name, self.specs) from None

    def _backend_for_location(self, backend: str | None) -> str:
        """``backend``, or the one serving the location's URI scheme, or ``atomic`` for a path."""
        scheme = uri_scheme(self.location)
        serving = sorted(name for name, spec in self.specs.items() if scheme in spec.schemes)
        if backend is None:
            if len(serving) > 1:
                raise PluginError(
                    f"backends {', '.join(serving)} all declare the scheme {scheme!r};"
                    " choose one with backend="
                )
            if scheme is None:
                return DEFAULT_BACKEND
            if not serving:
                known = sorted({s for spec in self.specs.values() for s in spec.schemes})
                raise UnknownBackendError(scheme, known, kind="URI scheme")
            return serving[0]
        named = self._spec(backend).schemes
        if named and scheme is not None and scheme not in named:
            raise InvalidLocationError(
                f"backend {backend!r} serves {', '.join(named)}:// locations,"
                f" not {redact(self.location)!r}"
            )
        return backend

    def _collect_targets(self) -> frozenset[str]:
        """The fallback backend and every backend a route may pick: the store opens them all."""
        try:
            declared = self.hook.storage_shim_route_targets(store=self)
            names = {self.default_backend, *(name for names in declared for name in names)}
        except Exception as exc:
            raise PluginError(f"a plugin's storage_shim_route_targets raised {exc!r}") from exc
        for name in names:
            self._spec(name)
        return frozenset(names)

    def _check_options(self) -> None:
        """Refuse options that none of the configured backends accepts (a typo, usually)."""
        unused = set(self._options)
        for name in self.targets:
            unused -= set(accepted_options(self._spec(name).factory, self._options))
        if unused:
            raise InvalidOptionError(
                f"option(s) {', '.join(sorted(unused))} accepted by none of the backends "
                f"{', '.join(sorted(self.targets))}"
            )

    def backend(self, name: str) -> Backend:
        """The store's instance of backend ``name``.

        Routed backends are created (and recover) when the store opens; any other
        registered backend on first use.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        instance = self._backends.get(name)
        if instance is not None:
            return instance
        spec = self._spec(name)
        with self._guard:
            if name not in self._backends:
                options = accepted_options(
                    spec.factory, {"durability": self.durability, **self._options}
                )
                with self._errors(name, None):
                    created = spec.factory(self.location, **options)
                    try:
                        created.recover()
                    except BaseException:
                        created.close()
                        raise
                    self._backends[name] = created
            return self._backends[name]

    def _replay_a_journal_left_behind(self) -> None:
        """Fold in a journal's log even when no key routes to the journal any more.

        Otherwise its commits not yet checkpointed (after a crash, or once the
        plugin routing keys to it is gone) would stay hidden from the other
        backends, and a later journal opening would replay them over newer files.
        """
        if JOURNAL not in self.specs or any(self._keeps_a_journal(n) for n in self.targets):
            return
        if uri_scheme(self.location) is not None:
            return
        pointer = os.path.join(os.fspath(self.location), STATE_DIR, JOURNAL_DIR, POINTER)
        fs = self._options.get("fs")
        if (fs if isinstance(fs, FileSystem) else FileSystem()).exists(pointer):
            self.backend(JOURNAL)  # its recovery replays and checkpoints

    def _keeps_a_journal(self, name: str) -> bool:
        factory = self._spec(name).factory
        return isinstance(factory, type) and issubclass(factory, JournalBackend)

    def backend_for(self, key: KeyLike) -> str:
        """The name of the backend that routing picks for ``key``."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        return self._route(parse_key(key))

    def _route(self, key: Key) -> str:
        """The backend for ``key``; remembered, as the hook contract lets a key keep its backend."""
        name = self._routed.get(key)
        if name is None:
            name = self._ask_route(key)
            if len(self._routed) >= _ROUTES_REMEMBERED:
                self._routed.clear()
            self._routed[key] = name
        return name

    def _ask_route(self, key: Key) -> str:
        try:
            name: object = self.hook.storage_shim_route(key=key, store=self)
        except Exception as exc:
            shown = format_key(key)
            raise PluginError(
                f"a plugin's storage_shim_route raised {exc!r} for {shown!r}"
            ) from exc
        if name is None:
            return self.default_backend
        if not isinstance(name, str):
            raise PluginError(f"storage_shim_route returned {name!r}, not a backend name or None")
        if name not in self.targets:
            if name not in self.specs:
                raise UnknownBackendError(name, self.specs)
            raise PluginError(
                f"storage_shim_route picked {name!r} for {format_key(key)!r}, but no plugin names"
                " it in storage_shim_route_targets; declare it there so that the store opens it"
                " with the store and lists its documents"
            )
        return name

    def _resolve(self, key: KeyLike) -> tuple[Key, str, Backend]:
        if self._closed:
            raise StoreClosedError("the store is closed")
        parsed = parse_key(key)
        name = self._route(parsed)
        return parsed, name, self.backend(name)

    @contextlib.contextmanager
    def _errors(self, name: str, key: Key | None, report: str | None = None) -> Iterator[None]:
        """Every failure below the store surfaces as a StorageError with its cause chained.

        With ``report``, that error hook hears of it first (a missing document excepted).
        """
        try:
            try:
                yield
            except StorageError:
                raise
            except OSError as exc:
                error = StorageIOError(exc.errno, f"{name}: {exc.strerror or exc}", exc.filename)
                raise error from exc
            except Exception as exc:
                raise StorageError(f"backend {name!r} failed: {exc!r}") from exc
        except StorageError as error:
            if report and not isinstance(error, NotFoundError):
                self._notify(report, key=key, error=error)
            raise

    def _refuse_inside_update(self, key: Key, operation: str) -> None:
        if self._transacting.active:
            raise UnsupportedOperationError(
                f"{operation} of {format_key(key)!r} on the store inside a transaction of this"
                " thread: it would commit on its own, outside the transaction; use the"
                " transaction's own methods (tx.write, tx.update, tx.remove)"
            )
        if key in self._updating.keys:
            raise UnsupportedOperationError(
                f"{operation} of {format_key(key)!r} inside update() of the same key: the update"
                " would overwrite it when it finishes; return the new value from fn instead"
            )

    @contextlib.contextmanager
    def _updating_key(self, name: str, key: Key, backend: Backend) -> Iterator[None]:
        with self._errors(name, key, _WRITE_ERROR):
            lock = backend.lock(key)
            lock.__enter__()
        updating = self._updating.keys
        updating.add(key)
        try:
            yield
        finally:
            updating.discard(key)
            with self._errors(name, key, _WRITE_ERROR):
                lock.__exit__(None, None, None)

    def _notify(self, hook: str, **kwargs: Any) -> None:
        try:
            getattr(self.hook, hook)(store=self, **kwargs)
        except Exception as exc:
            raise PluginError(f"a plugin's {hook} hook raised {exc!r}") from exc

    # -- reading ------------------------------------------------------------------------
    def read(self, key: KeyLike) -> Any:
        """The document stored under ``key``.

        Raises :class:`NotFoundError` when there is none and
        :class:`CorruptDocumentError` when its bytes are not JSON (after a few
        short retries, in case a writer outside the library is mid-rewrite).
        """
        parsed, name, backend = self._resolve(key)
        return self._read(parsed, name, backend)

    def _read(self, key: Key, name: str, backend: Backend) -> Any:
        with self._errors(name, key, _READ_ERROR):
            return self._decode(key, name, backend, backend.read(key))

    def _decode(self, key: Key, name: str, backend: Backend, data: bytes) -> Any:
        """Parse ``data``; bytes that do not parse are read again a few times before giving up."""
        attempt = quarantines = 0
        while True:
            try:
                return codec.decode(data)
            except ValueError as exc:
                if attempt >= self.read_retries:
                    reason = codec.describe_invalid(data, exc)
                    error = CorruptDocumentError(key, backend.location_of(key), reason)
                    quarantines += 1  # bounded: a writer may keep replacing corrupt bytes
                    if quarantines > 3 or not self._quarantined(key, name, backend, data, error):
                        raise error from exc
                    try:
                        data = backend.read(key)  # a document written since, if any
                    except NotFoundError:
                        raise _Quarantined(key) from None
                    attempt = 0
                    continue
            time.sleep(self.read_retry_delay * 2**attempt)
            attempt += 1
            data = backend.read_again(key)

    def _quarantined(
        self, key: Key, name: str, backend: Backend, data: bytes, error: CorruptDocumentError
    ) -> bool:
        """Ask ``storage_shim_on_corrupt`` what to do; True when the bytes were moved aside."""
        try:
            decision = self.hook.storage_shim_on_corrupt(key=key, error=error, store=self)
        except Exception as exc:
            raise PluginError(f"a plugin's storage_shim_on_corrupt raised {exc!r}") from exc
        if decision in (None, "raise"):
            return False
        if decision != "quarantine":
            raise PluginError(
                f"storage_shim_on_corrupt returned {decision!r}; expected 'raise', 'quarantine'"
                " or None"
            )
        try:
            moved_to = backend.quarantine(key, data)
        except UnsupportedOperationError as exc:
            raise UnsupportedOperationError(
                f"{error}; a plugin asked to quarantine it, but backend {name!r} cannot"
            ) from exc
        if moved_to is not None:
            error.quarantined_to = moved_to
            logger.warning("quarantined %s to %s", error.path, moved_to)
            self._notify("storage_shim_quarantined", key=key, error=error)
        return True

    def read_many(self, keys: Iterable[KeyLike]) -> dict[Key, Any]:
        """The documents of ``keys`` that exist, by parsed key.

        On a backend with transactions (``journal``) they come from one
        committed state, even while other processes commit; elsewhere each is
        read in turn. Missing keys are absent from the result.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        by_backend: dict[str, list[Key]] = {}
        for key in keys:
            parsed = parse_key(key)
            by_backend.setdefault(self._route(parsed), []).append(parsed)
        found: dict[Key, Any] = {}
        for name, wanted in by_backend.items():
            backend = self.backend(name)
            with self._errors(name, None, _READ_ERROR):
                for key, data in backend.read_many(wanted).items():
                    with contextlib.suppress(_Quarantined):
                        found[key] = self._decode(key, name, backend, data)
        return found

    def get(self, key: KeyLike, default: Any = None) -> Any:
        """Like :meth:`read`, but ``default`` when missing. A corrupt document still raises."""
        try:
            return self.read(key)
        except NotFoundError:
            return default

    def exists(self, key: KeyLike) -> bool:
        parsed, name, backend = self._resolve(key)
        with self._errors(name, parsed):
            return backend.exists(parsed)

    def list(self, prefix: KeyLike = ()) -> list[Key]:
        """Every key starting with ``prefix``, sorted."""
        parsed = parse_prefix(prefix)
        listers: dict[str, tuple[str, Backend]] = {}
        for name in sorted(self.targets):
            backend = self.backend(name)
            listers.setdefault(backend.namespace, (name, backend))
        if len(listers) == 1:
            ((name, backend),) = listers.values()
            with self._errors(name, parsed):
                ordered = sorted(backend.list(parsed))  # linear when the backend lists in order
            if any(map(operator.eq, ordered, itertools.islice(ordered, 1, None))):
                ordered = sorted(set(ordered))  # a backend listed a key twice
            return ordered
        keys: set[Key] = set()
        for name, backend in listers.values():
            with self._errors(name, parsed):
                keys.update(  # keep each key only where routing sends it
                    k
                    for k in backend.list(parsed)
                    if self.backend(self._route(k)).namespace == backend.namespace
                )
        return sorted(keys)

    # -- writing ------------------------------------------------------------------------
    def write(self, key: KeyLike, value: Any) -> Receipt:
        """Store ``value`` under ``key``. The value is serialised before anything is touched."""
        parsed, name, backend = self._resolve(key)
        self._refuse_inside_update(parsed, "write")
        return self._write(parsed, name, backend, codec.encode(value))

    def _write(self, key: Key, name: str, backend: Backend, data: bytes) -> Receipt:
        started = time.perf_counter()
        with self._errors(name, key, _WRITE_ERROR):
            outcome = backend.write(key, data)
        receipt = self._receipt(name, key, data, outcome, time.perf_counter() - started)
        self._notify("storage_shim_after_write", key=key, receipt=receipt)
        return receipt

    def _receipt(
        self, name: str, key: Key, data: bytes, outcome: WriteOutcome, seconds: float
    ) -> Receipt:
        return Receipt(
            backend=name,
            key=key,
            bytes=len(data),
            durability=self.durability,
            file_synced=outcome.file_synced,
            dir_synced=outcome.dir_synced,
            retries=outcome.retries,
            seconds=seconds,
        )

    def update(self, key: KeyLike, fn: Callable[[Any], T], *, default: Any = _MISSING) -> T:
        """Atomically replace the document with ``fn(current)`` and return the new value.

        ``fn`` gets a deep copy of ``default`` when the document is missing (no
        ``default``: :class:`NotFoundError`). The key's lock is held across the
        read, ``fn`` and the write, so concurrent updates from any thread or
        process (on backends with ``cross_process``) never lose each other's
        changes. ``fn`` may run again on another call; keep it free of side effects.
        Exceptions from ``fn`` propagate unchanged and nothing is written.
        """
        parsed, name, backend = self._resolve(key)
        self._refuse_inside_update(parsed, "update")
        with self._updating_key(name, parsed, backend):
            try:
                current = self._read(parsed, name, backend)
            except NotFoundError:
                if default is _MISSING:
                    raise
                current = copy.deepcopy(default)
            new = fn(current)
            self._write(parsed, name, backend, codec.encode(new))
            return new

    def transaction(self) -> Transaction:
        """A transaction: ``with store.transaction() as tx: tx.write(...); tx.update(...)``.

        Commits every change all-or-nothing when the block ends normally and
        discards them on an exception. Only backends declaring ``transactions``
        (``journal``, and plugins such as ``sqlite``) offer it; on others it
        raises :class:`UnsupportedOperationError` naming those that do.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        if not any(self._has_transactions(name) for name in self.targets):
            raise self._no_transactions(sorted(self.targets))
        return Transaction(self)

    def _has_transactions(self, name: str) -> bool:
        capabilities = self._spec(name).capabilities
        return capabilities is not None and capabilities.transactions

    def _no_transactions(self, names: Iterable[str]) -> UnsupportedOperationError:
        offering = sorted(name for name in self.specs if self._has_transactions(name))
        return UnsupportedOperationError(
            f"backend {' and '.join(map(repr, names))} has no transactions; backends that"
            f" have them: {', '.join(offering) or 'none installed'}"
        )

    def _require_transactions(self, name: str) -> None:
        if not self._has_transactions(name):
            raise self._no_transactions([name])

    def _enter_transaction(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")
        if self._transacting.active:
            raise UnsupportedOperationError("transactions do not nest: this thread has one open")
        if self._updating.keys:
            raise UnsupportedOperationError("a transaction cannot start inside update()")
        self._transacting.active = True

    def _leave_transaction(self) -> None:
        self._transacting.active = False

    def remove(self, key: KeyLike) -> bool:
        """Delete the document; returns whether it existed."""
        parsed, name, backend = self._resolve(key)
        self._refuse_inside_update(parsed, "remove")
        with self._errors(name, parsed, _WRITE_ERROR):
            existed = backend.remove(parsed)
        self._notify("storage_shim_after_remove", key=parsed, existed=existed)
        return existed

    def checkpoint(self) -> None:
        """Ask every backend of the store to fold its log into the files (``journal``).

        A journal also checkpoints by itself, by size and on close; call this
        before copying the directory with other tools, for instance.
        """
        if self._closed:
            raise StoreClosedError("the store is closed")
        for name in sorted(self.targets):
            backend = self.backend(name)
            with self._errors(name, None, _WRITE_ERROR):
                backend.checkpoint()

    # -- life cycle -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every backend the store created. Closing twice is harmless."""
        if self._closed:
            return
        try:
            self._notify("storage_shim_store_closing")
        finally:
            self._closed = True
            errors = []
            for name, backend in self._backends.items():
                try:
                    with self._errors(name, None):
                        backend.close()
                except StorageError as exc:
                    errors.append(exc)
            self._backends.clear()
            if errors:
                raise errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Store {redact(self.location)!r} backend={self.default_backend!r} {state}>"


def open_store(
    location: str | os.PathLike[str],
    backend: str | None = None,
    *,
    durability: Durability = "fsync",
    routes: Mapping[KeyLike, str] | None = None,
    plugins: Iterable[object] = (),
    read_retries: int = 3,
    read_retry_delay: float = 0.005,
    **options: Any,
) -> Store:
    """Open (creating if needed) the store at ``location``: a directory, or a URI.

    ``backend`` is used for every key that neither a plugin's
    ``storage_shim_route`` nor ``routes`` (``{prefix: backend}``, most specific
    prefix wins) sends elsewhere. ``durability`` is ``"none"``, ``"fsync"``
    (file and directory) or ``"full"`` (``F_FULLFSYNC`` on macOS). Installed
    plugins are discovered from the ``storage_shim`` entry-point group;
    ``plugins`` registers a host's own. Remaining ``options`` go to the backend
    factories that accept them (for example ``lock_timeout`` or ``fs``).

    Without ``backend``, a URI location (``postgresql://...``) picks the
    backend declaring its scheme, and a directory gets ``atomic``.
    """
    if durability not in DURABILITY_LEVELS:
        raise ValueError(
            f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {durability!r}"
        )
    if read_retries < 0 or read_retry_delay < 0:
        raise ValueError("read_retries and read_retry_delay must not be negative")
    host_routes = Routes(routes)
    pm = get_plugin_manager(plugins)
    pm.register(HostRoutes(host_routes), name="storage_shim.host_routes")
    store = Store(
        location,
        backend=backend,
        durability=durability,
        routes=host_routes,
        plugin_manager=pm,
        read_retries=read_retries,
        read_retry_delay=read_retry_delay,
        options=options,
    )
    try:
        store._replay_a_journal_left_behind()
        for name in sorted(store.targets):
            store.backend(name)  # recovery runs on open, not on the first write
        store._notify("storage_shim_store_opened")
    except BaseException:
        store.close()
        raise
    return store


def backend_specs(plugins: Iterable[object] = ()) -> Mapping[str, BackendSpec]:
    """Every registered backend, built-in and installed plugins, by name."""
    return collect_backend_specs(get_plugin_manager(plugins))
