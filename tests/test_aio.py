"""storage_shim.aio: the asyncio facade never blocks the loop and keeps every guarantee.

Each test drives its own event loop with ``asyncio.run``. A file system whose
``fsync`` sleeps makes a backend write slow enough that a blocked loop shows:
a heartbeat coroutine records the longest gap between its ticks.
"""

from __future__ import annotations

import asyncio
import errno
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import storage_shim as ss
from storage_shim import aio

BACKENDS = ["atomic", "journal", "memory"]
FILE_BACKENDS = ["atomic", "journal"]


class SlowFS(ss.FileSystem):
    """Every flush of a file takes ``delay`` seconds longer, like a slow or busy disk.

    Directory flushes keep their speed, which keeps the slow tests short.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        if stat.S_ISREG(self.fstat(fd).st_mode):
            time.sleep(self.delay)
        super().fsync(fd, full=full, data_only=data_only)


class FailingFS(ss.FileSystem):
    """Every flush fails with EIO once ``armed``."""

    armed = False

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        if self.armed:
            raise OSError(errno.EIO, "injected I/O error")
        super().fsync(fd, full=full, data_only=data_only)


def run(main: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(main)


async def open_store(root: Path, backend: str, **options: Any) -> aio.AsyncStore:
    return await aio.open_store(root / backend, backend=backend, **options)


class Heartbeat:
    """Ticks every 5 ms on the loop and records the longest gap between two ticks."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _beat(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now


# -- exactness under concurrency ------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_500_concurrent_updates_of_one_key_end_exact(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, backend, durability="none") as store:
            results = await asyncio.gather(
                *(store.update("counter", lambda n: n + 1, default=0) for _ in range(500))
            )
            assert sorted(results) == list(range(1, 501))
            assert await store.read("counter") == 500
            assert len(store._update_locks) == 0  # no lock left per key

    run(main())


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_updates_from_coroutines_and_threads_do_not_lose_each_other(
    tmp_path: Path, backend: str
) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, backend, durability="none") as store:

            def from_thread() -> None:
                for _ in range(100):
                    store.sync.update("counter", lambda n: n + 1, default=0)

            thread = asyncio.to_thread(from_thread)
            updates = (store.update("counter", lambda n: n + 1, default=0) for _ in range(200))
            await asyncio.gather(thread, *updates)
            assert await store.read("counter") == 300

    run(main())


def test_waiting_updates_of_one_key_leave_the_threads_to_other_keys(tmp_path: Path) -> None:
    """200 queued updates of one key hold one thread: another key's update passes them."""

    async def main() -> None:
        async with await aio.open_store(tmp_path, write_threads=2, fs=SlowFS(0.005)) as store:
            finished: list[str] = []

            async def bump(key: str) -> None:
                await store.update(key, lambda n: n + 1, default=0)
                finished.append(key)

            hot = [asyncio.create_task(bump("hot")) for _ in range(200)]
            await asyncio.sleep(0)
            await bump("cold")
            assert finished.count("hot") < 200
            await asyncio.gather(*hot)
            assert await store.read("hot") == 200

    run(main())


def test_reads_do_not_queue_behind_writes(tmp_path: Path) -> None:
    """Writes waiting for locks or flushes fill the write threads; reads have their own."""

    async def main() -> None:
        async with await aio.open_store(tmp_path, write_threads=2, fs=SlowFS(0.02)) as store:
            await store.write("other", {"n": 0})
            keys = [f"k{i}" for i in range(50)]
            writes = [asyncio.create_task(store.write(key, {"n": 1})) for key in keys]
            await asyncio.sleep(0)
            assert await store.read("other") == {"n": 0}
            # Queued behind them, the read would return after at least 48 writes (0.5 s).
            assert sum(w.done() for w in writes) < len(writes) // 2
            await asyncio.gather(*writes)
            assert await store.list() == sorted([("other",), *((k,) for k in keys)])

    run(main())


# -- the loop is never blocked --------------------------------------------------------------------
DELAY = 0.3
"""Each flush sleeps this long; a loop blocked by one shows a gap at least as long."""
BOUND = DELAY / 2
"""A generous bound on the heartbeat's longest gap when nothing blocks the loop."""


def test_slow_writes_do_not_block_the_loop(tmp_path: Path) -> None:
    async def main() -> float:
        async with await aio.open_store(tmp_path, fs=SlowFS(DELAY)) as store:
            async with Heartbeat() as heart:
                await store.write("doc", {"n": 1})
                assert await store.update("doc", lambda d: {"n": d["n"] + 1}) == {"n": 2}
                assert await store.remove("doc")
            return heart.max_gap

    assert run(main()) < BOUND


def test_opening_a_transaction_and_closing_do_not_block_the_loop(tmp_path: Path) -> None:
    """The journal flushes when it opens (a new segment), on commit, and closing checkpoints."""

    async def main() -> float:
        async with Heartbeat() as heart:
            store = await aio.open_store(tmp_path, backend="journal", fs=SlowFS(DELAY))
            async with store:
                async with store.transaction() as tx:
                    await tx.write("a", 1)
                    await tx.write("b", 2)
                assert await store.read_many(["a", "b"]) == {("a",): 1, ("b",): 2}
        return heart.max_gap

    assert run(main()) < BOUND


def test_the_heartbeat_notices_a_blocking_call(tmp_path: Path) -> None:
    """Negative control: the same write made on the loop shows up as a gap."""

    async def main() -> float:
        async with await aio.open_store(tmp_path, fs=SlowFS(DELAY)) as store:
            async with Heartbeat() as heart:
                store.sync.write("doc", {"n": 1})
                await asyncio.sleep(0.02)
            return heart.max_gap

    assert run(main()) >= DELAY


# -- the operations --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_operation(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, backend, routes={"cache": "memory"}) as store:
            receipt = await store.write("session/s1", {"title": "hi"})
            assert receipt.key == ("session", "s1")
            assert receipt.bytes > 0
            assert await store.read(("session", "s1")) == {"title": "hi"}
            assert await store.get("session/none", "absent") == "absent"
            assert await store.exists("session/s1")
            assert not await store.exists("session/none")
            await store.write("cache/c1", [1])
            assert await store.list() == [("cache", "c1"), ("session", "s1")]
            assert await store.list("session") == [("session", "s1")]
            assert await store.read_many(k for k in ["session/s1", "cache/c1", "x"]) == {
                ("session", "s1"): {"title": "hi"},
                ("cache", "c1"): [1],
            }
            assert await store.backend_for("cache/c1") == "memory"
            assert await store.backend_for("session/s1") == backend
            await store.checkpoint()
            assert await store.remove("session/s1")
            assert not await store.remove("session/s1")
            assert await store.list("session") == []

    run(main())


def test_open_store_passes_the_options_on(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="no_such_option"):
            await aio.open_store(tmp_path, no_such_option=1)
        with pytest.raises(ValueError, match="durability"):
            await aio.open_store(tmp_path, durability="sometimes")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="threads"):
            await aio.open_store(tmp_path, write_threads=0)
        async with await aio.open_store(tmp_path, durability="none") as store:
            receipt = await store.write("doc", 1)
            assert receipt.durability == "none"
            assert not receipt.file_synced

    run(main())


# -- errors ---------------------------------------------------------------------------------------
def test_errors_propagate_typed(tmp_path: Path) -> None:
    async def main() -> None:
        async with await aio.open_store(tmp_path) as store:
            await store.write("doc", {"n": 1})
            with pytest.raises(ss.NotFoundError):
                await store.read("missing")
            with pytest.raises(ss.NotFoundError):
                await store.update("missing", lambda d: d)
            with pytest.raises(ss.InvalidKeyError):
                await store.read("../escape")
            with pytest.raises(ss.InvalidKeyError):
                await store.update("../escape", lambda d: d)
            with pytest.raises(ss.SerializationError):
                await store.write("doc", {"n": object()})

            def refuse(document: Any) -> Any:
                raise KeyError("from fn")

            with pytest.raises(KeyError, match="from fn"):
                await store.update("doc", refuse)
            (tmp_path / "bad.json").write_text("{not json")
            with pytest.raises(ss.CorruptDocumentError):
                await store.read("bad")
            assert await store.read("doc") == {"n": 1}

    run(main())


def test_io_errors_reach_the_coroutine_as_storage_io_errors(tmp_path: Path) -> None:
    fs = FailingFS()

    async def main() -> None:
        async with await aio.open_store(tmp_path, fs=fs) as store:
            await store.write("doc", {"n": 1})
            fs.armed = True
            with pytest.raises(ss.StorageIOError) as caught:
                await store.update("doc", lambda d: {"n": 2})
            assert caught.value.errno == errno.EIO
            assert isinstance(caught.value.__cause__, OSError)
            fs.armed = False
            assert await store.read("doc") == {"n": 1}

    run(main())


def test_a_lock_held_elsewhere_times_out_typed(tmp_path: Path) -> None:
    held, release = threading.Event(), threading.Event()

    def hold(document: Any) -> Any:
        held.set()
        release.wait(10)
        return document

    async def main() -> None:
        async with await aio.open_store(tmp_path, lock_timeout=0.1) as store:
            await store.write("doc", 1)
            holder = asyncio.create_task(asyncio.to_thread(store.sync.update, "doc", hold))
            await asyncio.to_thread(held.wait, 10)
            with pytest.raises(ss.LockTimeoutError):
                await store.update("doc", lambda n: n + 1)
            release.set()
            assert await holder == 1

    run(main())


def test_an_async_fn_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    async def bump(document: Any) -> Any:
        return document + 1

    async def main() -> None:
        async with await aio.open_store(tmp_path) as store:
            await store.write("n", 1)
            with pytest.raises(TypeError, match="plain function"):
                _ = await store.update("n", bump)
            with pytest.raises(TypeError, match="plain function"):
                _ = await store.update("n", lambda d: bump(d))  # noqa: PLW0108  # a coroutine
            assert await store.read("n") == 1

    run(main())


def test_a_closed_store_raises_store_closed_error(tmp_path: Path) -> None:
    async def main() -> None:
        store = await aio.open_store(tmp_path)
        await store.write("doc", 1)
        await store.close()
        await store.close()
        assert store.closed
        assert store.sync.closed
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.read("doc"),
            lambda: store.get("doc"),
            lambda: store.exists("doc"),
            store.list,
            lambda: store.read_many(["doc"]),
            lambda: store.write("doc", 2),
            lambda: store.update("doc", lambda n: n + 1),
            lambda: store.remove("doc"),
            store.checkpoint,
            lambda: store.backend_for("doc"),
        ]
        for call in calls:
            with pytest.raises(ss.StoreClosedError):
                await call()
        with pytest.raises(ss.StoreClosedError):
            store.transaction()

    run(main())


def test_close_lets_running_updates_finish_and_refuses_the_queued_ones(tmp_path: Path) -> None:
    async def main() -> tuple[int, int, int]:
        store = await aio.open_store(tmp_path, fs=SlowFS(0.01))
        updates = [
            asyncio.create_task(store.update("n", lambda n: n + 1, default=0)) for _ in range(50)
        ]
        await asyncio.sleep(0.05)
        await store.close()
        outcomes = await asyncio.gather(*updates, return_exceptions=True)
        applied = [o for o in outcomes if isinstance(o, int)]
        refused = [o for o in outcomes if isinstance(o, ss.StoreClosedError)]
        with ss.open_store(tmp_path) as reopened:
            return len(applied), len(refused), reopened.read("n")

    applied, refused, stored = run(main())
    assert applied + refused == 50
    assert applied >= 1
    assert refused >= 1
    assert stored == applied


# -- cancellation ---------------------------------------------------------------------------------
def test_a_cancelled_update_that_no_thread_started_never_runs(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_bump(n: int) -> int:
        entered.set()
        release.wait(10)
        return n + 1

    async def main() -> int:
        async with await aio.open_store(tmp_path) as store:
            first = asyncio.create_task(store.update("n", slow_bump, default=0))
            await asyncio.to_thread(entered.wait, 10)
            second = asyncio.create_task(store.update("n", lambda n: n + 100, default=0))
            await asyncio.sleep(0.01)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            release.set()
            assert await first == 1
            value = await store.read("n")
            assert isinstance(value, int)
            return value

    assert run(main()) == 1


def test_a_cancelled_update_already_running_completes_before_the_next(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow_bump(n: int) -> int:
        entered.set()
        release.wait(10)
        return n + 1

    def plus_100(n: int) -> int:
        return n + 100

    async def main() -> int:
        async with await aio.open_store(tmp_path) as store:
            running = asyncio.create_task(store.update("n", slow_bump, default=0))
            await asyncio.to_thread(entered.wait, 10)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            following = asyncio.create_task(store.update("n", plus_100, default=0))
            await asyncio.sleep(0.01)
            assert not following.done()  # it waits for the cancelled one's thread
            release.set()
            return await following

    assert run(main()) == 101


# -- transactions ----------------------------------------------------------------------------------
def test_a_transaction_commits_on_normal_exit(tmp_path: Path) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, "journal") as store:
            await store.write("gone", 0)
            async with store.transaction() as tx:
                await tx.write("a", {"n": 1})
                assert await tx.update("b", lambda n: n + 1, default=0) == 1
                assert await tx.remove("gone")
                assert await tx.read("a") == {"n": 1}
                assert await tx.get("gone", "none") == "none"
                assert not await tx.exists("gone")
                assert await store.get("a") is None  # not committed yet
            assert [r.key for r in tx.receipts] == [("a",), ("b",)]
            assert await store.read_many(["a", "b", "gone"]) == {("a",): {"n": 1}, ("b",): 1}

    run(main())


def test_a_transaction_discards_on_an_exception(tmp_path: Path) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, "journal") as store:
            await store.write("a", 0)
            transaction = store.transaction()

            async def failing() -> None:
                async with transaction as tx:
                    await tx.write("a", 1)
                    await tx.write("b", 1)
                    raise ValueError("no")

            with pytest.raises(ValueError, match="no"):
                await failing()
            assert transaction.receipts == []
            assert await store.read_many(["a", "b"]) == {("a",): 0}

    run(main())


def test_a_cancelled_transaction_discards_and_releases_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, "journal", lock_timeout=5) as store:
            await store.write("a", 0)
            inside = asyncio.Event()

            async def transact() -> None:
                async with store.transaction() as tx:
                    await tx.write("a", 1)
                    await tx.write("b", 1)
                    inside.set()
                    await asyncio.sleep(60)

            task = asyncio.create_task(transact())
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await store.read_many(["a", "b"]) == {("a",): 0}
            await store.write("a", 2)  # the writer lock was released
            assert await store.read("a") == 2

    run(main())


def test_a_transaction_cancelled_during_an_operation_discards(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(n: int) -> int:
        entered.set()
        release.wait(10)
        return n + 1

    async def main() -> None:
        async with await open_store(tmp_path, "journal", lock_timeout=5) as store:
            await store.write("a", 0)

            async def transact() -> None:
                async with store.transaction() as tx:
                    await tx.write("b", 1)
                    await tx.update("a", slow)

            task = asyncio.create_task(transact())
            await asyncio.to_thread(entered.wait, 10)
            task.cancel()
            await asyncio.sleep(0.01)
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await store.read_many(["a", "b"]) == {("a",): 0}
            async with store.transaction() as tx:
                await tx.write("b", 2)
            assert await store.read("b") == 2

    run(main())


def test_transaction_misuse_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with await open_store(tmp_path, "atomic") as plain:
            with pytest.raises(ss.UnsupportedOperationError, match="no transactions"):
                plain.transaction()
        async with await open_store(tmp_path, "journal", lock_timeout=5) as store:
            async with store.transaction() as tx:
                await tx.write("a", 1)
                with pytest.raises(ss.UnsupportedOperationError, match="inside one of its"):
                    await store.write("b", 1)
                with pytest.raises(ss.UnsupportedOperationError, match="inside one of its"):
                    await store.update("b", lambda n: n, default=0)
                with pytest.raises(ss.UnsupportedOperationError, match="do not nest"):
                    async with store.transaction():
                        pass
                with pytest.raises(TypeError, match="plain function"):
                    _ = await tx.update("a", lambda n: asyncio.sleep(0))
                assert await store.get("a") is None  # reading the store is fine
            assert await store.read("a") == 1
            with pytest.raises(ss.UnsupportedOperationError, match="only once"):
                async with tx:
                    pass
            with pytest.raises(ss.UnsupportedOperationError, match="async with"):
                await store.transaction().write("a", 2)

    run(main())


def test_a_cancelled_opening_closes_the_store_it_opened(tmp_path: Path) -> None:
    opened, release, closing = threading.Event(), threading.Event(), threading.Event()

    class Recorder:
        @ss.hookimpl
        def storage_shim_store_opened(self) -> None:
            opened.set()
            release.wait(10)

        @ss.hookimpl
        def storage_shim_store_closing(self) -> None:
            closing.set()

    async def main() -> None:
        task = asyncio.create_task(aio.open_store(tmp_path, plugins=[Recorder()]))
        await asyncio.to_thread(opened.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await asyncio.to_thread(closing.wait, 10)

    run(main())
