"""asyncio facade: the same store, awaited, with every file operation on worker threads.

>>> async with await storage_shim.aio.open_store(location) as store:   # doctest: +SKIP
...     await store.update("counter", lambda n: n + 1, default=0)

An :class:`AsyncStore` wraps a :class:`~storage_shim.Store` and owns two bounded
thread pools: one for reads (``read``, ``get``, ``exists``, ``list``,
``read_many``), one for writes (``write``, ``update``, ``remove``,
``checkpoint``). A backend may make a writer wait for a lock, but readers never
queue behind those waits. ``update()`` calls of one key first queue on an
:class:`asyncio.Lock` of that key, so a thousand coroutines updating one
counter hold one thread, not a thousand. See ``docs/asyncio.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import inspect
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from ._types import Key, KeyLike
from .backend import Durability, Receipt
from .errors import StoreClosedError, UnsupportedOperationError
from .keys import format_key, parse_key
from .store import Store
from .store import open_store as open_sync_store
from .transaction import Transaction

__all__ = ["AsyncStore", "AsyncTransaction", "open_store"]

T = TypeVar("T")
_MISSING: Any = object()
DEFAULT_READ_THREADS = 8
DEFAULT_WRITE_THREADS = 8

_open_transactions: contextvars.ContextVar[tuple[AsyncStore, ...]] = contextvars.ContextVar(
    "storage_shim_aio_open_transactions", default=()
)
"""The stores whose transaction the current task (and the tasks it starts) is inside."""


async def open_store(
    location: str | os.PathLike[str],
    backend: str | None = None,
    *,
    durability: Durability = "fsync",
    routes: Mapping[KeyLike, str] | None = None,
    plugins: Iterable[object] = (),
    read_retries: int = 3,
    read_retry_delay: float = 0.005,
    read_threads: int = DEFAULT_READ_THREADS,
    write_threads: int = DEFAULT_WRITE_THREADS,
    **options: Any,
) -> AsyncStore:
    """Open the store like :func:`storage_shim.open_store`, on a worker thread.

    Opening runs every backend's crash recovery, which reads and may rewrite
    files, so it never runs on the event loop. ``read_threads`` and
    ``write_threads`` size the store's two thread pools; everything else is
    passed on unchanged. Cancelled while opening, the store that the thread
    still opens is closed again.
    """
    opener = functools.partial(
        open_sync_store,
        location,
        backend,
        durability=durability,
        routes=routes,
        plugins=plugins,
        read_retries=read_retries,
        read_retry_delay=read_retry_delay,
        **options,
    )
    AsyncStore.check_pool_sizes(read_threads, write_threads)
    thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="storage_shim-open")
    opening = thread.submit(opener)
    thread.shutdown(wait=False)
    try:
        store = await asyncio.wrap_future(opening)
    except asyncio.CancelledError:
        if not opening.cancel():
            opening.add_done_callback(_close_opened)
        raise
    return AsyncStore(store, read_threads=read_threads, write_threads=write_threads)


def _close_opened(opening: concurrent.futures.Future[Store]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


class _KeyLocks:
    """One :class:`asyncio.Lock` per key while some coroutine holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[Key, asyncio.Lock] = {}
        self._users: dict[Key, int] = {}

    async def acquire(self, key: Key) -> None:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._users[key] = self._users.get(key, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._forget(key)
            raise

    def release(self, key: Key) -> None:
        self._locks[key].release()
        self._forget(key)

    def _forget(self, key: Key) -> None:
        users = self._users[key] - 1
        if users:
            self._users[key] = users
        else:
            del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)


def _plain(fn: Callable[[Any], T]) -> Callable[[Any], T]:
    """``fn`` checked to be synchronous: an async one would hold the key's lock across awaits."""
    if inspect.iscoroutinefunction(fn):
        raise TypeError(_ASYNC_FN)

    @functools.wraps(fn)
    def checked(current: Any) -> T:
        new = fn(current)
        if inspect.isawaitable(new):
            close = getattr(new, "close", None)
            if callable(close):
                close()  # no "coroutine was never awaited" warning
            raise TypeError(_ASYNC_FN)
        return new

    return checked


_ASYNC_FN = (
    "update() takes a plain function, not a coroutine function: the key's lock (across"
    " processes, and the whole log for journal) is held while it runs; await what you"
    " need first, then pass a function that computes the new value from it"
)


async def _result(future: concurrent.futures.Future[T]) -> T:
    """Await ``future``; cancelled, the call is dropped if no thread has started it yet."""
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise


class AsyncStore:
    """The asyncio face of a :class:`~storage_shim.Store`; get one from :func:`open_store`.

    Each method awaits the store's method of the same name, run on a worker
    thread. Use it from one event loop. Cancelling a call that a thread has
    already started does not stop it (a write is never half done): it finishes
    in the background, and a ``write`` or ``update`` may still take effect.
    A call no thread has started yet never runs.
    """

    def __init__(
        self,
        store: Store,
        *,
        read_threads: int = DEFAULT_READ_THREADS,
        write_threads: int = DEFAULT_WRITE_THREADS,
    ) -> None:
        self.check_pool_sizes(read_threads, write_threads)
        self.sync = store
        """The wrapped synchronous store (for code running on a thread of its own)."""
        self._readers = concurrent.futures.ThreadPoolExecutor(
            read_threads, thread_name_prefix="storage_shim-read"
        )
        self._writers = concurrent.futures.ThreadPoolExecutor(
            write_threads, thread_name_prefix="storage_shim-write"
        )
        self._update_locks = _KeyLocks()
        self._closing: asyncio.Future[None] | None = None

    @staticmethod
    def check_pool_sizes(read_threads: int, write_threads: int) -> None:
        if read_threads < 1 or write_threads < 1:
            raise ValueError("read_threads and write_threads must be at least 1")

    # -- running on the pools ----------------------------------------------------------------
    def _submit(
        self, pool: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., T], *args: Any
    ) -> concurrent.futures.Future[T]:
        if self.closed:
            raise StoreClosedError("the store is closed")
        try:
            return pool.submit(fn, *args)
        except RuntimeError:  # the pool shut down between the check and the submission
            raise StoreClosedError("the store is closed") from None

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await _result(self._submit(self._readers, fn, *args))

    async def _write(self, key: KeyLike | None, fn: Callable[..., T], *args: Any) -> T:
        if key is not None:
            self._refuse_inside_transaction(key)
        return await _result(self._submit(self._writers, fn, *args))

    def _refuse_inside_transaction(self, key: KeyLike) -> None:
        if self in _open_transactions.get():
            raise UnsupportedOperationError(
                f"writing {format_key(parse_key(key))!r} on the store inside one of its"
                " transactions: it would wait for the transaction to end, which waits for it;"
                " use the transaction's own methods (tx.write, tx.update, tx.remove)"
            )

    # -- reading ---------------------------------------------------------------------------------
    async def read(self, key: KeyLike) -> Any:
        return await self._read(self.sync.read, key)

    async def get(self, key: KeyLike, default: Any = None) -> Any:
        return await self._read(self.sync.get, key, default)

    async def exists(self, key: KeyLike) -> bool:
        return await self._read(self.sync.exists, key)

    async def list(self, prefix: KeyLike = ()) -> list[Key]:
        return await self._read(self.sync.list, prefix)

    async def read_many(self, keys: Iterable[KeyLike]) -> dict[Key, Any]:
        return await self._read(self.sync.read_many, list(keys))

    async def backend_for(self, key: KeyLike) -> str:
        """The backend routing picks for ``key``; routing does no I/O, so it runs on the loop."""
        if self.closed:
            raise StoreClosedError("the store is closed")
        return self.sync.backend_for(key)

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, key: KeyLike, value: Any) -> Receipt:
        """Like :meth:`Store.write`; ``value`` is serialised on the thread, so leave it be."""
        return await self._write(key, self.sync.write, key, value)

    async def remove(self, key: KeyLike) -> bool:
        return await self._write(key, self.sync.remove, key)

    async def checkpoint(self) -> None:
        await self._write(None, self.sync.checkpoint)

    async def update(self, key: KeyLike, fn: Callable[[Any], T], *, default: Any = _MISSING) -> T:
        """Like :meth:`Store.update`; ``fn`` is a plain function, run on a worker thread.

        Updates of one key wait for each other on the event loop, so only one
        thread per key waits for the backend's lock (which also excludes other
        processes). A coroutine function raises :class:`TypeError`.
        """
        checked = _plain(fn)
        parsed = parse_key(key)
        self._refuse_inside_transaction(parsed)
        call = functools.partial(self.sync.update, parsed, checked)
        if default is not _MISSING:
            call = functools.partial(call, default=default)
        locks = self._update_locks
        await locks.acquire(parsed)
        try:
            future = self._submit(self._writers, call)
        except BaseException:
            locks.release(parsed)
            raise
        # The next update of the key may start once this one left its thread, not before,
        # even when the awaiting coroutine is cancelled meanwhile.
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: _call_soon(loop, locks.release, parsed))
        return await _result(future)

    def transaction(self) -> AsyncTransaction:
        """``async with store.transaction() as tx:``, like :meth:`Store.transaction`.

        Every operation of the transaction runs on one thread of its own (the
        backend's writer lock belongs to the thread that took it). It commits
        when the block ends normally and discards on any exception, cancellation
        included.
        """
        if self.closed:
            raise StoreClosedError("the store is closed")
        return AsyncTransaction(self, self.sync.transaction())

    # -- life cycle ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closing is not None or self.sync.closed

    async def close(self) -> None:
        """Wait for the calls under way, then close the store, off the loop.

        Calls made after ``close()`` began raise :class:`StoreClosedError`.
        Closing twice is harmless; a cancelled ``close()`` still completes.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(asyncio.to_thread(self._close_blocking))
        await asyncio.shield(self._closing)

    def _close_blocking(self) -> None:
        self._readers.shutdown(wait=True, cancel_futures=False)
        self._writers.shutdown(wait=True, cancel_futures=False)
        self.sync.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncStore of {self.sync!r}>"


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[Key], None], key: Key) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for the key any more
        loop.call_soon_threadsafe(fn, key)


class AsyncTransaction:
    """A :class:`~storage_shim.Transaction` whose operations run on one dedicated thread."""

    def __init__(self, store: AsyncStore, transaction: Transaction) -> None:
        self._store = store
        self._transaction = transaction
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._entered = False
        """Set on the transaction's thread, read there: its calls run one after the other."""
        self._token: contextvars.Token[tuple[AsyncStore, ...]] | None = None

    @property
    def receipts(self) -> list[Receipt]:
        """One receipt per document written, once the transaction committed."""
        return self._transaction.receipts

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._thread is None:
            raise UnsupportedOperationError("use the transaction as `async with`")
        return await _result(self._thread.submit(fn, *args, **kwargs))

    async def read(self, key: KeyLike) -> Any:
        return await self._call(self._transaction.read, key)

    async def get(self, key: KeyLike, default: Any = None) -> Any:
        return await self._call(self._transaction.get, key, default)

    async def exists(self, key: KeyLike) -> bool:
        return await self._call(self._transaction.exists, key)

    async def write(self, key: KeyLike, value: Any) -> None:
        await self._call(self._transaction.write, key, value)

    async def remove(self, key: KeyLike) -> bool:
        return await self._call(self._transaction.remove, key)

    async def update(self, key: KeyLike, fn: Callable[[Any], T], *, default: Any = _MISSING) -> T:
        checked = _plain(fn)
        if default is _MISSING:
            return await self._call(self._transaction.update, key, checked)
        return await self._call(self._transaction.update, key, checked, default=default)

    async def __aenter__(self) -> Self:
        store = self._store
        if store.closed:
            raise StoreClosedError("the store is closed")
        if self._thread is not None:
            raise UnsupportedOperationError("a transaction can be entered only once")
        if store in _open_transactions.get():
            raise UnsupportedOperationError("transactions do not nest: this task has one open")
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="storage_shim-transaction"
        )
        entering = self._thread.submit(self._enter)
        try:
            await asyncio.wrap_future(entering)
        except BaseException as exc:
            if not entering.cancel():  # cancelled while entering: leave once it has entered
                self._finish(type(exc), exc, exc.__traceback__)
            self._thread.shutdown(wait=False)
            raise
        self._token = _open_transactions.set((*_open_transactions.get(), store))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._thread is not None
        assert self._token is not None
        _open_transactions.reset(self._token)
        ending = self._finish(exc_type, exc, traceback)
        self._thread.shutdown(wait=False)
        # Shielded: cancelled here, the commit or discard still runs to its end on the thread.
        await asyncio.shield(asyncio.wrap_future(ending))

    def _enter(self) -> None:
        self._transaction.__enter__()
        self._entered = True

    def _finish(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> concurrent.futures.Future[None]:
        """Commit (no exception) or discard, on the transaction's thread after its last call."""
        assert self._thread is not None
        return self._thread.submit(self._leave, exc_type, exc, traceback)

    def _leave(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._entered:
            self._transaction.__exit__(exc_type, exc, traceback)
