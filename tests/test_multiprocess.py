"""The harness has teeth: the naive backend fails what the contract proves of the others.

And a lock dies with the process holding it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import selected_backends

import storage_shim as ss
from storage_shim.testing import workers

SELECTED = selected_backends()

pytestmark = pytest.mark.slow


if "naive" in SELECTED:

    def test_naive_readers_do_see_torn_documents(tmp_path: Path) -> None:
        """The contract's torn-read test, on naive: it must catch at least one tear."""
        size, key, location = 2_000_000, "torn/doc", os.fspath(tmp_path)
        last, tallies = workers.race_readers_against_a_writer(
            location, "naive", {}, key=key, size=size, seconds=5.0, stop_when_torn=True
        )
        assert last >= 1
        assert sum(t.torn for t in tallies) > 0
        assert all(t.first_problem for t in tallies if t.torn)


LOCKING_BACKENDS = [b for b in ("lockfile", "atomic") if b in SELECTED]

if LOCKING_BACKENDS and sys.platform != "win32":

    @pytest.mark.parametrize("backend", LOCKING_BACKENDS)
    def test_a_killed_lock_holder_does_not_block_the_next_update(
        tmp_path: Path, backend: str
    ) -> None:
        location, key = os.fspath(tmp_path), "locked/doc"
        ctx = workers.spawn_context()
        held = ctx.Event()
        holder = ctx.Process(
            target=workers.hold_lock,
            args=(location, backend, {}),
            kwargs={"key": key, "held": held, "seconds": 120.0},
            daemon=True,
        )
        holder.start()
        try:
            assert held.wait(60), "the worker never took the lock"
            with ss.open_store(location, backend=backend, lock_timeout=0.2) as store:
                with pytest.raises(ss.LockTimeoutError):  # the lock really is held
                    store.update(key, lambda n: n + 1, default=0)
            os.kill(holder.pid or 0, signal.SIGKILL)
            holder.join(30)
            assert holder.exitcode == -signal.SIGKILL
        finally:
            if holder.is_alive():
                holder.kill()
                holder.join()
        with ss.open_store(location, backend=backend, lock_timeout=5) as store:
            assert store.update(key, lambda n: n + 1, default=0) == 1
