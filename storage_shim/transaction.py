"""Transactions: several documents changed all-or-nothing, from :meth:`Store.transaction`."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, TypeVar

from . import codec
from ._types import Key, KeyLike
from .backend import BackendTransaction, Receipt
from .errors import NotFoundError, UnsupportedOperationError
from .keys import format_key, parse_key

if TYPE_CHECKING:
    from .store import Store

T = TypeVar("T")
_MISSING: Any = object()


class Transaction:
    """Reads and writes of one transaction; use it as ``with store.transaction() as tx:``.

    Reads see the state committed when the transaction started its first
    operation, plus its own writes. Writes are buffered and committed together
    when the block ends normally; an exception discards them. The first key
    picks the backend (through routing); every later key must route to it.
    The backend excludes other writers from the first operation to the end of
    the block, so keep the block short.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._changes: dict[Key, bytes | None] = {}
        self._existed: dict[Key, bool] = {}
        self._backend_name: str | None = None
        self._backend_tx: BackendTransaction | None = None
        self._resources = contextlib.ExitStack()
        self._state = "new"
        self.receipts: list[Receipt] = []
        """One receipt per document written, once the transaction committed."""

    # -- the operations -----------------------------------------------------------------
    def read(self, key: KeyLike) -> Any:
        parsed, backend_tx = self._bind(key)
        if parsed in self._changes:
            data = self._changes[parsed]
            if data is None:
                raise NotFoundError(parsed)
            return codec.decode(data)
        name = self._backend_name
        assert name is not None
        store = self._store
        with store._errors(name, parsed, "storage_shim_read_error"):
            return store._decode(parsed, name, store.backend(name), backend_tx.read(parsed))

    def get(self, key: KeyLike, default: Any = None) -> Any:
        try:
            return self.read(key)
        except NotFoundError:
            return default

    def exists(self, key: KeyLike) -> bool:
        try:
            self.read(key)
        except NotFoundError:
            return False
        return True

    def write(self, key: KeyLike, value: Any) -> None:
        data = codec.encode(value)
        parsed, _ = self._bind(key)
        self._changes[parsed] = data

    def remove(self, key: KeyLike) -> bool:
        """Remove the document when the transaction commits; returns whether it exists now."""
        existed = self.exists(key)
        parsed, _ = self._bind(key)
        self._existed.setdefault(parsed, existed)
        self._changes[parsed] = None
        return existed

    def update(self, key: KeyLike, fn: Callable[[Any], T], *, default: Any = _MISSING) -> T:
        """Like :meth:`Store.update`, inside the transaction."""
        try:
            current = self.read(key)
        except NotFoundError:
            if default is _MISSING:
                raise
            current = copy.deepcopy(default)
        new = fn(current)
        self.write(key, new)
        return new

    # -- binding to a backend -----------------------------------------------------------------
    def _bind(self, key: KeyLike) -> tuple[Key, BackendTransaction]:
        if self._state != "open":
            raise UnsupportedOperationError(f"the transaction is {self._state}, not open")
        store = self._store
        parsed = parse_key(key)
        name = store._route(parsed)
        if self._backend_tx is None:
            store._require_transactions(name)
            backend = store.backend(name)
            with store._errors(name, parsed, "storage_shim_write_error"):
                self._backend_tx = self._resources.enter_context(backend.begin())
            self._backend_name = name
        elif name != self._backend_name:
            raise UnsupportedOperationError(
                f"{format_key(parsed)!r} routes to backend {name!r}, but this transaction"
                f" runs on {self._backend_name!r}: a transaction cannot span backends"
            )
        return parsed, self._backend_tx

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self._state != "new":
            raise UnsupportedOperationError("a transaction can be entered only once")
        self._store._enter_transaction()
        self._state = "open"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        store, committed = self._store, False
        try:
            if exc_type is None and self._changes and self._backend_tx is not None:
                name = self._backend_name
                assert name is not None
                started = time.perf_counter()
                with store._errors(name, None, "storage_shim_write_error"):
                    outcome = self._backend_tx.commit(self._changes)
                seconds = time.perf_counter() - started
                committed = True
                self.receipts = [
                    store._receipt(name, key, data, outcome, seconds)
                    for key, data in self._changes.items()
                    if data is not None
                ]
        finally:
            self._state = "committed" if committed else "discarded"
            try:
                with store._errors(self._backend_name or "?", None):
                    self._resources.close()
            finally:
                store._leave_transaction()
        if committed:
            receipts = iter(self.receipts)
            for key, data in self._changes.items():
                if data is None:
                    existed = self._existed.get(key, True)
                    store._notify("storage_shim_after_remove", key=key, existed=existed)
                else:
                    store._notify("storage_shim_after_write", key=key, receipt=next(receipts))
