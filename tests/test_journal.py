"""The journal backend: its record format, publishing, checkpoints, recovery, poisoning and kills.

The conformance suite (tests/test_contract.py) covers what every backend does;
these tests cover what only the journal promises.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import storage_shim as ss
from storage_shim import codec
from storage_shim.backends.journal import JOURNAL_DIR, POINTER, JournalBackend, segment_name
from storage_shim.fs import FileSystem
from storage_shim.journal import records
from storage_shim.journal.records import HEADER_SIZE, SegmentHeader

SALT = b"01234567"


def reader(data: bytes) -> records.Pread:
    return lambda size, offset: data[offset : offset + size]


def journal_dir(location: Path) -> Path:
    return location / ".storage_shim" / JOURNAL_DIR


def segments(location: Path) -> list[str]:
    return sorted(p.name for p in journal_dir(location).glob("*.log"))


def current_segment(location: Path) -> Path:
    pointer = codec.decode((journal_dir(location) / POINTER).read_bytes())
    return journal_dir(location) / segment_name(pointer["segment"])


def valid_end(path: Path) -> int:
    """The offset just past the last valid record of a segment."""
    data = path.read_bytes()
    header = SegmentHeader.decode(data)
    assert header is not None
    offset, seq = HEADER_SIZE, header.base_seq + 1
    while (step := records.read_step(reader(data), header.salt, offset, seq)).kind == "commit":
        offset, seq = step.offset, seq + 1
    return offset


def journal(store: ss.Store) -> JournalBackend:
    backend = store.backend("journal")
    assert isinstance(backend, JournalBackend)
    return backend


# -- the record format ---------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, records.MAX_FRAGMENT, 3 * records.MAX_FRAGMENT + 5])
def test_records_round_trip_whole_or_fragmented(size: int) -> None:
    payload = os.urandom(size)
    data = records.frame(SALT, 7, records.FULL, payload) + bytes(64)
    fragments = max(1, -(-size // records.MAX_FRAGMENT))
    assert len(data) == size + fragments * records.RECORD_HEADER_SIZE + 64
    step = records.read_step(reader(data), SALT, 0, 7)
    assert (step.kind, step.seq, step.payload) == ("commit", 7, payload)
    assert records.read_step(reader(data), SALT, step.offset, 8).kind == "end"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_damaged_byte_makes_a_record_invalid(data: st.DataObject) -> None:
    payload = data.draw(st.binary(min_size=1, max_size=300))
    record = bytearray(records.frame(SALT, 3, records.FULL, payload))
    position = data.draw(st.integers(0, len(record) - 1))
    record[position] ^= data.draw(st.integers(1, 255))
    assert records.read_step(reader(bytes(record)), SALT, 0, 3).kind == "torn"


def test_records_of_another_segment_or_out_of_order_never_validate() -> None:
    data = records.frame(SALT, 3, records.FULL, b"payload")
    assert records.read_step(reader(data), b"76543210", 0, 3).kind == "torn"
    assert records.read_step(reader(data), SALT, 0, 4).kind == "torn"
    assert records.read_step(reader(data[:-1]), SALT, 0, 3).kind == "torn"


def test_an_incomplete_set_of_fragments_never_commits() -> None:
    data = records.frame(SALT, 1, records.FULL, os.urandom(2 * records.MAX_FRAGMENT + 1))
    cut = records.MAX_FRAGMENT + records.RECORD_HEADER_SIZE  # exactly the FIRST fragment
    assert records.read_step(reader(data[:cut] + bytes(100)), SALT, 0, 1).kind == "torn"
    assert records.read_step(reader(data[:cut]), SALT, 0, 1).kind == "torn"


def test_strict_recovery_can_tell_damage_from_a_torn_tail() -> None:
    first = records.frame(SALT, 1, records.FULL, b"one", batch_end=True)
    second = records.frame(SALT, 2, records.FULL, b"two", batch_end=True)
    third = records.frame(SALT, 3, records.FULL, b"three", batch_end=True)
    # The third batch was written after the second's flush, which came after the damaged one's.
    damaged = first[:-1] + b"X" + second + third
    found = records.find_later_batch(reader(damaged), SALT, 0, len(damaged), 1)
    assert found == len(first) + len(second)
    torn = first[: len(first) // 2] + bytes(100)
    assert records.find_later_batch(reader(torn), SALT, 0, len(torn), 1) is None
    # One group commit's records reach the disk in any order before its flush: a valid
    # later record of the same batch, or a fragment of the torn transaction, is no damage.
    same_batch = first[:-1] + b"X" + second  # the damaged record's batch mark is unreadable
    assert records.find_later_batch(reader(same_batch), SALT, 0, len(same_batch), 1) is None
    same_batch = records.frame(SALT, 1, records.FULL, b"one")[:-1] + b"X" + second
    assert records.find_later_batch(reader(same_batch), SALT, 0, len(same_batch), 1) is None
    big = records.frame(SALT, 1, records.FULL, os.urandom(2 * records.MAX_FRAGMENT + 9))
    fragments = big[:-1] + b"X"
    assert records.find_later_batch(reader(fragments), SALT, 0, len(fragments), 1) is None


@given(
    st.lists(
        st.tuples(
            st.lists(st.text("abz09_-é", min_size=1, max_size=5), min_size=1, max_size=3),
            st.none() | st.binary(max_size=50),
        ),
        max_size=5,
    )
)
def test_changes_round_trip(changes: list[tuple[list[str], bytes | None]]) -> None:
    typed = [(tuple(key), data) for key, data in changes]
    assert records.decode_changes(records.encode_changes(typed)) == typed


def test_a_segment_header_is_checked() -> None:
    header = SegmentHeader.fresh(4, base_seq=99)
    assert SegmentHeader.decode(header.encode()) == header
    assert SegmentHeader.decode(header.encode()[:-1]) is None
    damaged = bytearray(header.encode())
    damaged[10] ^= 1
    assert SegmentHeader.decode(bytes(damaged)) is None


# -- publishing -------------------------------------------------------------------------
def test_commits_are_read_from_the_log_before_the_files_show_them(tmp_path: Path) -> None:
    location = tmp_path / "store"
    with ss.open_store(location, "journal", publish_delay=3600) as writer:
        writer.write("doc", {"v": 1})
        assert not (location / "doc.json").exists()
        with ss.open_store(location, "journal", publish_delay=3600) as other:
            assert other.read("doc") == {"v": 1}
            assert other.list() == [("doc",)]
            writer.remove("doc")
            assert other.read_many(["doc"]) == {}
            writer.write("doc", {"v": 2})
            journal(writer).publish()
            assert codec.decode((location / "doc.json").read_bytes()) == {"v": 2}
            assert other.read("doc") == {"v": 2}


def test_without_a_publish_delay_files_are_published_before_the_write_returns(
    tmp_path: Path,
) -> None:
    with ss.open_store(tmp_path, "journal", publish_delay=None) as store:
        store.write("a/b", [1])
        assert (tmp_path / "a" / "b.json").read_bytes() == b"[1]"
        store.remove("a/b")
        assert not (tmp_path / "a" / "b.json").exists()


def test_the_publisher_shows_commits_as_files_soon(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "journal", publish_delay=0.01) as store:
        for n in range(50):
            store.write("doc", {"n": n})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (tmp_path / "doc.json").exists():
            time.sleep(0.01)
        while time.monotonic() < deadline:
            if codec.decode((tmp_path / "doc.json").read_bytes()) == {"n": 49}:
                break
            time.sleep(0.01)
        assert codec.decode((tmp_path / "doc.json").read_bytes()) == {"n": 49}


def test_the_files_keep_the_layout_of_the_other_backends(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "journal", publish_delay=3600) as store:
        store.write("session/s1", {"title": "kept"})
        store.write("session/s2", {"title": "removed"})
        store.remove("session/s2")
    with ss.open_store(tmp_path, "atomic") as store:
        assert store.list() == [("session", "s1")]
        assert store.read("session/s1") == {"title": "kept"}


# -- checkpoints and rotation ---------------------------------------------------------------
def test_a_checkpoint_starts_a_new_segment_and_drops_the_old(tmp_path: Path) -> None:
    with ss.open_store(tmp_path, "journal", publish_delay=3600) as store:
        first = segments(tmp_path)
        store.write("doc", 1)
        store.checkpoint()
        second = segments(tmp_path)
        assert len(first) == len(second) == 1
        assert first != second
        assert current_segment(tmp_path).name == second[0]
        assert (tmp_path / "doc.json").read_bytes() == b"1"
        assert store.read("doc") == 1


def test_readers_follow_the_log_across_many_checkpoints(tmp_path: Path) -> None:
    options: dict[str, Any] = {"publish_delay": None, "checkpoint_bytes": 4096}
    with (
        ss.open_store(tmp_path, "journal", **options) as writer,
        ss.open_store(tmp_path, "journal", **options) as other,
    ):
        seen = set()
        for n in range(200):
            writer.write("doc", {"n": n, "pad": "x" * 300})
            assert other.read("doc")["n"] == n
            seen.add(current_segment(tmp_path).name)
        assert len(seen) > 10
        assert len(segments(tmp_path)) == 1


# -- recovery ------------------------------------------------------------------------------
def append_garbage(location: Path, garbage: bytes) -> None:
    segment = current_segment(location)
    with segment.open("r+b") as file:
        file.seek(valid_end(segment))
        file.write(garbage)


def test_recovery_keeps_the_valid_prefix_and_never_appends_after_a_torn_tail(
    tmp_path: Path,
) -> None:
    with ss.open_store(tmp_path, "journal", publish_delay=3600) as store:
        store.write("a", 1)
        store.write("b", 2)
        torn_segment = current_segment(tmp_path)
        half = records.frame(b"whatever", 3, records.FULL, b"x" * 500)[:200]
        append_garbage(tmp_path, half)
        with ss.open_store(tmp_path, "journal", publish_delay=3600) as recovered:
            assert recovered.read_many(["a", "b"]) == {("a",): 1, ("b",): 2}
            assert not torn_segment.exists()
            recovered.write("c", 3)
        assert store.read("c") == 3  # the first store followed the new segment
        store.write("d", 4)
    with ss.open_store(tmp_path, "journal") as store:
        assert store.read_many(["a", "b", "c", "d"]) == {
            ("a",): 1,
            ("b",): 2,
            ("c",): 3,
            ("d",): 4,
        }


def test_a_writer_meeting_a_torn_tail_starts_a_new_segment(tmp_path: Path) -> None:
    with (
        ss.open_store(tmp_path, "journal", publish_delay=3600) as store,
        ss.open_store(tmp_path, "journal", publish_delay=3600) as other,
    ):
        store.write("a", 1)
        torn_segment = current_segment(tmp_path)
        append_garbage(tmp_path, b"\xff" * 40)  # a process died half-way through a record
        other.write("b", 2)
        assert not torn_segment.exists()
        assert store.read_many(["a", "b"]) == {("a",): 1, ("b",): 2}
        assert valid_end(current_segment(tmp_path)) > HEADER_SIZE


def test_strict_recovery_refuses_valid_records_after_damage(tmp_path: Path) -> None:
    crashed = tmp_path / "crashed"
    with ss.open_store(tmp_path / "live", "journal", publish_delay=3600) as store:
        store.write("a", 1)
        store.write("b", 2)
        store.write("c", 3)
        shutil.copytree(tmp_path / "live", crashed)  # what a crash right now would leave
    segment = current_segment(crashed)
    data = bytearray(segment.read_bytes())
    data[HEADER_SIZE + records.RECORD_HEADER_SIZE] ^= 0xFF  # inside the first record's payload
    segment.write_bytes(bytes(data))
    with pytest.raises(ss.CorruptJournalError, match="followed by a later commit"):
        ss.open_store(crashed, "journal", strict=True)
    with ss.open_store(crashed, "journal") as lenient:  # keeps the prefix before the damage
        assert lenient.read_many(["a", "b", "c"]) == {}


# -- failures --------------------------------------------------------------------------------
class WatchesSegments(FileSystem):
    """Knows which descriptors are journal segments."""

    def __init__(self) -> None:
        self.segment_fds: set[int] = set()

    def open(self, path: str, flags: int, mode: int = 0o666) -> int:
        fd = super().open(path, flags, mode)
        if path.endswith(".log"):
            self.segment_fds.add(fd)
        return fd


class FailingSync(WatchesSegments):
    """Fails the next fsync of a journal segment with EIO."""

    armed = False

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        if self.armed and fd in self.segment_fds:
            self.armed = False
            raise OSError(errno.EIO, "injected I/O error")
        super().fsync(fd, full=full, data_only=data_only)


def test_a_failed_fsync_poisons_the_journal_until_reopened(tmp_path: Path) -> None:
    fs = FailingSync()
    store = ss.open_store(tmp_path, "journal", fs=fs, publish_delay=3600)
    store.write("a", 1)
    fs.armed = True
    with pytest.raises(ss.StorageIOError) as failed:
        store.write("a", 2)
    assert isinstance(failed.value.__cause__, OSError)
    for call in (
        lambda: store.write("b", 1),
        lambda: store.read("a"),
        lambda: store.update("a", lambda n: n, default=0),
        lambda: store.read_many(["a"]),
    ):
        with pytest.raises(ss.BackendPoisonedError, match="reopen"):
            call()
    with pytest.raises(ss.BackendPoisonedError), store.transaction() as tx:
        tx.write("c", 1)
    store.close()
    with ss.open_store(tmp_path, "journal") as reopened:
        assert reopened.read("a") in (1, 2)  # the failed commit may or may not have landed
        reopened.write("b", 3)
        assert reopened.read("b") == 3


class CountingSync(WatchesSegments):
    segment_syncs = 0

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        if data_only and fd in self.segment_fds:
            self.segment_syncs += 1
        super().fsync(fd, full=full, data_only=data_only)


def test_concurrent_committers_share_flushes(tmp_path: Path) -> None:
    fs = CountingSync()
    threads, writes = 8, 40
    with ss.open_store(tmp_path, "journal", fs=fs, publish_delay=3600) as store:
        start = threading.Barrier(threads)

        def work(index: int) -> None:
            start.wait()
            for n in range(writes):
                assert store.write(("t", str(index)), n).durable

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        assert 0 < fs.segment_syncs < threads * writes
        assert store.read_many([("t", str(i)) for i in range(threads)]) == {
            ("t", str(i)): writes - 1 for i in range(threads)
        }


def test_durability_none_still_publishes_only_logged_commits(tmp_path: Path) -> None:
    fs = CountingSync()
    with ss.open_store(tmp_path, "journal", durability="none", publish_delay=None, fs=fs) as store:
        receipt = store.write("doc", 1)
        assert not receipt.durable
        assert fs.segment_syncs == 1  # the log was flushed before the file showed the commit
        assert (tmp_path / "doc.json").read_bytes() == b"1"


# -- several live stores ---------------------------------------------------------------------
def test_a_writer_behind_a_torn_tail_follows_the_pointer_instead_of_checkpointing(
    tmp_path: Path,
) -> None:
    """Two live stores; a third writer died mid-record. The second to write must not
    checkpoint from its stale view (it would put old files back and clobber the new segment)."""
    options: dict[str, Any] = {"publish_delay": 3600}
    with (
        ss.open_store(tmp_path, "journal", **options) as first,
        ss.open_store(tmp_path, "journal", **options) as second,
    ):
        first.write("doc", {"v": 1})
        assert second.read("doc") == {"v": 1}
        append_garbage(tmp_path, b"\xff" * 40)
        second.write("doc", {"v": 2})  # meets the torn tail: a new segment, no ROTATE record
        second.write("other", 2)
        first.write("mine", 1)  # meets the same torn tail, which the pointer has left behind
        second.write("late", 3)
        expected = {("doc",): {"v": 2}, ("other",): 2, ("mine",): 1, ("late",): 3}
        assert first.read_many(["doc", "other", "mine", "late"]) == expected
        with ss.open_store(tmp_path, "journal") as fresh:
            assert fresh.read_many(["doc", "other", "mine", "late"]) == expected


KILLED_CHECKPOINT = """
import os, signal, sys
import storage_shim as ss
from storage_shim.fs import FileSystem

class DieAt(FileSystem):
    armed = False
    def replace(self, src, dst):
        if self.armed and sys.argv[2] == "before-pointer" and dst.endswith(os.sep + "current"):
            os.kill(os.getpid(), signal.SIGKILL)
        super().replace(src, dst)
        if self.armed and sys.argv[2] == "after-pointer" and dst.endswith(os.sep + "current"):
            os.kill(os.getpid(), signal.SIGKILL)

fs = DieAt()
store = ss.open_store(sys.argv[1], "journal", publish_delay=3600, fs=fs)
store.write("child", 1)
fs.armed = True
store.checkpoint()
"""


@pytest.mark.parametrize("moment", ["before-pointer", "after-pointer"])
def test_a_checkpoint_killed_around_the_pointer_loses_no_live_commit(
    tmp_path: Path, moment: str
) -> None:
    with ss.open_store(tmp_path, "journal", publish_delay=3600) as live:
        live.write("before", 0)
        child = subprocess.run(
            [sys.executable, "-c", KILLED_CHECKPOINT, str(tmp_path), moment], check=False
        )
        assert child.returncode == -9
        assert live.write("acked", {"important": True}).durable
        with ss.open_store(tmp_path, "journal") as other:
            assert other.read_many(["before", "child", "acked"]) == {
                ("before",): 0,
                ("child",): 1,
                ("acked",): {"important": True},
            }
            other.write("from-other", 1)
        assert live.read("from-other") == 1


class FailingPublication(FileSystem):
    """Fails the rename that publishes a document, after the commit's flush."""

    def __init__(self) -> None:
        self.failures = 0

    def replace(self, src: str, dst: str) -> None:
        if self.failures and dst.endswith("balance.json"):
            self.failures -= 1
            raise OSError(errno.ENOSPC, "injected: no space to publish")
        super().replace(src, dst)


def test_a_commit_stands_when_only_its_publication_fails(tmp_path: Path) -> None:
    fs = FailingPublication()
    with ss.open_store(tmp_path, "journal", publish_delay=None, fs=fs) as store:
        store.write("balance", 100)
        fs.failures = 1
        with store.transaction() as tx:
            tx.update("balance", lambda n: n - 30)
        assert [r.key for r in tx.receipts] == [("balance",)]
        assert store.read("balance") == 70
        store.write("unrelated", 1)  # the next commit publishes what is pending
        assert (tmp_path / "balance.json").read_bytes() == b"70"


class HeldFlush(FileSystem):
    def __init__(self) -> None:
        self.hold = False
        self.inside, self.release = threading.Event(), threading.Event()

    def fsync(self, fd: int, *, full: bool = False, data_only: bool = False) -> None:
        if self.hold and data_only:
            self.hold = False
            self.inside.set()
            self.release.wait()
        super().fsync(fd, full=full, data_only=data_only)


def test_a_committer_interrupted_while_queued_does_not_stall_the_others(tmp_path: Path) -> None:
    fs = HeldFlush()
    with ss.open_store(tmp_path, "journal", fs=fs, publish_delay=3600) as store:
        group = journal(store)._group
        fs.hold = True
        leader = threading.Thread(target=store.write, args=("a", 1))
        leader.start()
        fs.inside.wait()
        original = group._cond.wait

        def interrupted_wait(timeout: float | None = None) -> bool:
            raise KeyboardInterrupt

        group._cond.wait = interrupted_wait  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            store.write("b", 2)
        group._cond.wait = original  # type: ignore[method-assign]
        fs.release.set()
        leader.join()
        later = threading.Thread(target=store.write, args=("c", 3), daemon=True)
        later.start()
        later.join(30)
        assert not later.is_alive()
        assert store.read_many(["a", "b", "c"]) == {("a",): 1, ("c",): 3}


def test_list_sees_unpublished_commits_when_atomic_shares_the_directory(tmp_path: Path) -> None:
    routes: dict[ss.KeyLike, str] = {"sessions": "journal"}
    with ss.open_store(tmp_path, "atomic", routes=routes, publish_delay=3600) as store:
        store.write("plain", 1)
        store.write("sessions/s1", {"t": 1})
        assert store.list() == [("plain",), ("sessions", "s1")]
        store.remove("sessions/s1")
        assert store.list() == [("plain",)]


def test_strict_recovery_accepts_a_transaction_torn_between_its_fragments(
    tmp_path: Path,
) -> None:
    child = subprocess.run([sys.executable, "-c", TORN_FRAGMENTS, str(tmp_path)], check=False)
    assert child.returncode == -9
    with ss.open_store(tmp_path, "journal", strict=True) as store:
        assert store.read_many(["small", "big"]) == {("small",): 1}


TORN_FRAGMENTS = """
import os, signal, sys
import storage_shim as ss
from storage_shim.fs import FileSystem

class DieMidRecord(FileSystem):
    armed, chunks, logs = False, 0, set()
    def open(self, path, flags, mode=0o666):
        fd = super().open(path, flags, mode)
        if path.endswith(".log"):
            self.logs.add(fd)
        return fd
    def pwrite(self, fd, data, offset):
        if self.armed and fd in self.logs and any(bytes(data[:64])):
            self.chunks += 1
            if self.chunks == 3:  # the FIRST and a MIDDLE fragment written, the rest not
                os.kill(os.getpid(), signal.SIGKILL)
        return super().pwrite(fd, data, offset)

fs = DieMidRecord()
store = ss.open_store(sys.argv[1], "journal", publish_delay=3600, fs=fs)
store.write("small", 1)
fs.armed = True
store.write("big", "x" * 3_500_000)
"""


# -- SIGKILL while committing ----------------------------------------------------------------
CHILD = """
import sys
import storage_shim as ss

location, delay = sys.argv[1], sys.argv[2]
publish_delay = None if delay == "none" else float(delay)
with ss.open_store(location, "journal", publish_delay=publish_delay) as store:
    n = store.get("kill/a", {"v": 0})["v"]
    print("open", flush=True)
    while True:
        n += 1
        with store.transaction() as tx:
            tx.write("kill/a", {"v": n})
            tx.write("kill/b", {"v": n, "pad": str(n) * (300_000 // len(str(n)))})
            tx.write("kill/c", {"v": n})
        print(n, flush=True)
"""


def acknowledged(lines: Iterator[str]) -> int:
    last = 0
    for line in lines:
        if line.strip().isdigit():
            last = int(line)
    return last


@pytest.mark.parametrize("publish_delay", ["none", "0", "0.02"])
def test_sigkill_never_splits_a_transaction_nor_loses_an_acknowledged_one(
    tmp_path: Path, publish_delay: str
) -> None:
    pick = random.Random(publish_delay)
    rounds = int(os.environ.get("STORAGE_SHIM_KILL_ROUNDS", "12"))
    last_acknowledged = 0
    for _ in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), publish_delay],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "open\n"
        time.sleep(pick.uniform(0, 0.25))
        child.kill()
        child.wait()
        last_acknowledged = max(last_acknowledged, acknowledged(child.stdout))
        child.stdout.close()
        with ss.open_store(tmp_path, "journal") as store:
            found = store.read_many(["kill/a", "kill/b", "kill/c"])
        if not found:
            assert last_acknowledged == 0
            continue
        versions = {doc["v"] for doc in found.values()}
        assert len(found) == 3
        assert len(versions) == 1, f"documents from different transactions: {found.keys()}"
        (version,) = versions
        assert last_acknowledged <= version <= last_acknowledged + 1
        pad = found[("kill", "b")]["pad"]
        assert pad == str(version) * (300_000 // len(str(version)))
        last_acknowledged = version
        for name in "abc":  # after recovery the files themselves agree
            assert codec.decode((tmp_path / "kill" / f"{name}.json").read_bytes())["v"] == version
    assert last_acknowledged > 0
