"""Writers killed with SIGKILL mid-transaction leave every document at one commit."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import storage_shim as ss

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

DOCUMENTS = 12
PAD = 200_000

KILL_INSIDE_THE_COMMIT = """
import os, signal, sqlite3, sys
import storage_shim as ss

location, documents, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wal = os.path.join(location, "storage.sqlite3-wal")
committed_wal_size = None
real_connect = sqlite3.connect


def kill_once_uncommitted_pages_reach_the_wal():
    if committed_wal_size is not None and os.path.getsize(wal) > committed_wal_size + 2 * pad:
        os.kill(os.getpid(), signal.SIGKILL)
    return 0


def connect(*args, **kwargs):
    conn = real_connect(*args, **kwargs)
    conn.execute("PRAGMA cache_size = -256")  # 256 KiB: a big transaction spills into the WAL
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the WAL only grows
    conn.set_progress_handler(kill_once_uncommitted_pages_reach_the_wal, 1)
    return conn


sqlite3.connect = connect


def fill(tx, generation):
    for n in range(documents):
        tx.write(f"docs/{n}", {"generation": generation, "pad": str(generation) * pad})


with ss.open_store(location, backend="sqlite") as store:
    with store.transaction() as tx:
        fill(tx, 1)
    committed_wal_size = os.path.getsize(wal)
    print(committed_wal_size, flush=True)
    with store.transaction() as tx:
        fill(tx, 2)  # the statements run, and the child dies, when the block ends
print("the transaction committed: the kill never happened", flush=True)
"""

COMMIT_IN_A_LOOP = """
import sys
import storage_shim as ss

location, documents, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with ss.open_store(location, backend="sqlite") as store:
    generation = 0
    while True:
        generation += 1
        with store.transaction() as tx:
            for n in range(documents):
                pad_text = chr(ord("a") + generation % 26) * pad
                tx.write(f"docs/{n}", {"generation": generation, "pad": pad_text})
            tx.update("count", lambda c: c + 1, default=0)
        print(generation, flush=True)
"""


def run_child(script: str, location: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(location), str(DOCUMENTS), str(PAD)],
        stdout=subprocess.PIPE,
        text=True,
    )


def generations(location: Path) -> set[Any]:
    with ss.open_store(location, backend="sqlite") as store:
        found = store.read_many([f"docs/{n}" for n in range(DOCUMENTS)])
        assert len(found) == DOCUMENTS
        for doc in found.values():
            assert len(doc["pad"]) == PAD
            assert doc["pad"] == doc["pad"][0] * PAD  # every page of one version
        assert store.get("count", 0) in {0, *(doc["generation"] for doc in found.values())}
        store.write("after/the/kill", True)
    with contextlib.closing(sqlite3.connect(location / "storage.sqlite3")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    return {doc["generation"] for doc in found.values()}


def test_a_writer_killed_inside_its_commit_leaves_the_previous_commit(tmp_path: Path) -> None:
    location = tmp_path / "store"
    child = run_child(KILL_INSIDE_THE_COMMIT, location)
    output, _ = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, output
    committed_wal_size = int(output.split()[0])
    wal = location / "storage.sqlite3-wal"
    assert os.path.getsize(wal) > committed_wal_size + 2 * PAD  # half a commit reached the disk
    assert generations(location) == {1}


@pytest.mark.parametrize("seed", range(3))
def test_writers_killed_at_random_moments_leave_whole_transactions(
    tmp_path: Path, seed: int
) -> None:
    location = tmp_path / "store"
    child = run_child(COMMIT_IN_A_LOOP, location)
    assert child.stdout is not None
    try:
        acknowledged = [int(child.stdout.readline()) for _ in range(2)]
        delay = random.Random(seed).uniform(0, 0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=delay)
        child.kill()
    finally:
        rest, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    acknowledged += [int(line) for line in rest.split()]
    last = acknowledged[-1]
    (survivor,) = generations(location)
    assert survivor in (last, last + 1)  # acknowledged commits survive; the next is all or nothing
