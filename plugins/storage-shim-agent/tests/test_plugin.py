"""The plugin registered explicitly (``plugins=[...]``): routing, settings, statistics, logs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import storage_shim_agent
from storage_shim_agent import AgentSettings, plugin

import storage_shim as ss


def open_store(root: Path, **options: object) -> ss.Store:
    return ss.open_store(root, plugins=[plugin], **options)  # type: ignore[arg-type]


# -- routing --------------------------------------------------------------------------------------
def test_the_default_table(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.backend_for("session_diff/ses_1") == "atomic"
        assert store.backend_for("part/msg_1/prt_1") == "journal"
        assert store.backend_for("message/ses_1/msg_1") == "journal"
        assert store.backend_for("session/prj_1/ses_1") == "atomic"
        assert store.backend_for("project/prj_1") == "atomic"
        assert store.backend_for("config/ui") == "lockfile"
        assert store.backend_for("config") == "lockfile"  # a prefix matches itself too
        assert store.backend_for("partial/x") == "atomic"  # segments, not string prefixes


def test_configured_settings_apply_to_stores_opened_afterwards(tmp_path: Path) -> None:
    before = open_store(tmp_path / "before")
    storage_shim_agent.configure(
        AgentSettings(routes={"todo": "journal", "config/ui": "lockfile", "config": "atomic"})
    )
    try:
        with open_store(tmp_path / "after") as after:
            assert after.backend_for("todo/ses_1") == "journal"
            assert after.backend_for("config/ui/theme") == "lockfile"
            assert after.backend_for("config/keys") == "atomic"
            assert after.backend_for("part/msg_1/prt_1") == "atomic"
        assert before.backend_for("part/msg_1/prt_1") == "journal"  # a key keeps its backend
        assert before.backend_for("todo/ses_1") == "atomic"
    finally:
        before.close()


def test_it_can_apply_to_other_fallback_backends(tmp_path: Path) -> None:
    storage_shim_agent.configure(AgentSettings(applies_to=frozenset({"atomic", "lockfile"})))
    with open_store(tmp_path, backend="lockfile") as store:
        assert store.backend_for("part/msg_1/prt_1") == "journal"
        assert store.backend_for("todo/ses_1") == "lockfile"


def test_disabled_it_routes_and_counts_nothing(tmp_path: Path) -> None:
    storage_shim_agent.configure(AgentSettings(enabled=False))
    with open_store(tmp_path) as store:
        assert store.targets == {"atomic"}
        store.write("part/msg_1/prt_1", {"text": "hi"})
        assert store.backend_for("part/msg_1/prt_1") == "atomic"
        assert storage_shim_agent.stats(store) == {}


def test_a_transaction_spans_messages_and_parts(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        with store.transaction() as tx:
            tx.write("message/ses_1/msg_1", {"role": "assistant"})
            tx.write("part/msg_1/prt_1", {"type": "text", "text": "hi"})
        assert store.read_many(["message/ses_1/msg_1", "part/msg_1/prt_1"]) == {
            ("message", "ses_1", "msg_1"): {"role": "assistant"},
            ("part", "msg_1", "prt_1"): {"type": "text", "text": "hi"},
        }

        def spanning() -> None:
            with store.transaction() as tx:
                tx.write("part/msg_1/prt_2", {})
                tx.write("session/prj_1/ses_1", {})

        with pytest.raises(ss.UnsupportedOperationError, match="cannot span backends"):
            spanning()
        assert not store.exists("part/msg_1/prt_2")


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="negative"):
        AgentSettings(slow_write_seconds=-1)
    environ = {
        "STORAGE_SHIM_AGENT_SLOW_SECONDS": "0.25",
        "STORAGE_SHIM_AGENT_LARGE_BYTES": "4096",
        "STORAGE_SHIM_AGENT_APPLIES_TO": "atomic, journal",
        "STORAGE_SHIM_AGENT": "no",
    }
    settings = AgentSettings.from_env(environ)
    assert settings.slow_write_seconds == 0.25
    assert settings.large_write_bytes == 4096
    assert settings.applies_to == {"atomic", "journal"}
    assert not settings.enabled
    assert settings.routes == storage_shim_agent.DEFAULT_ROUTES
    with pytest.raises(ValueError, match="STORAGE_SHIM_AGENT_LARGE_BYTES"):
        AgentSettings.from_env({"STORAGE_SHIM_AGENT_LARGE_BYTES": "1 MiB"})


# -- statistics -----------------------------------------------------------------------------------
def test_statistics_per_prefix(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.write("session/prj_1/ses_1", {"title": "a"})
        store.update("session/prj_1/ses_1", lambda s: {**s, "title": "abc"})
        store.write("session_diff/ses_1", [{"file": "x", "after": "y" * 10_000}])
        threads = [
            threading.Thread(target=store.write, args=(f"part/msg_1/prt_{i}", {"n": i}))
            for i in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with store.transaction() as tx:
            tx.write("message/ses_1/msg_1", {"role": "user"})
            tx.write("part/msg_1/prt_9", {"n": 9})
        store.remove("part/msg_1/prt_0")
        stats = storage_shim_agent.stats(store)

    assert list(stats) == ["message", "part", "session", "session_diff"]
    session = stats["session"]
    assert session.count == 2
    assert session.bytes == len(b'{"title":"a"}') + len(b'{"title":"abc"}')
    assert session.max_bytes == len(b'{"title":"abc"}')
    assert session.backends == {"atomic"}
    assert stats["session_diff"].max_bytes > 10_000
    assert stats["part"].count == 9  # removals are not writes
    assert stats["part"].backends == {"journal"}
    assert stats["message"].count == 1
    for entry in stats.values():
        assert entry.seconds > 0
        assert 0 < entry.max_seconds <= entry.seconds
        assert entry.mean_seconds == pytest.approx(entry.seconds / entry.count)


def test_statistics_are_per_store_and_can_be_reset(tmp_path: Path) -> None:
    with open_store(tmp_path / "a") as a, open_store(tmp_path / "b") as b:
        a.write("session/prj_1/ses_1", {})
        assert set(storage_shim_agent.stats(a)) == {"session"}
        assert storage_shim_agent.stats(b) == {}
        storage_shim_agent.reset_stats(a)
        assert storage_shim_agent.stats(a) == {}


def test_a_receipt_without_seconds_counts_zero(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        receipt = SimpleNamespace(backend="atomic", bytes=7)
        plugin.storage_shim_after_write(store=store, key=("todo", "x"), receipt=receipt)  # type: ignore[arg-type]
        todo = storage_shim_agent.stats(store)["todo"]
        assert (todo.count, todo.bytes, todo.seconds) == (1, 7, 0.0)


def test_slow_and_large_writes_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="storage_shim_agent")
    storage_shim_agent.configure(AgentSettings(large_write_bytes=1000))
    with open_store(tmp_path / "large") as store:
        store.write("session_diff/ses_1", "x" * 2000)
        store.write("session/prj_1/ses_1", {"small": True})
    assert [(r.levelname, r.getMessage().split(",")[0]) for r in caplog.records] == [
        ("INFO", "large write: session_diff/ses_1")
    ]
    caplog.clear()
    storage_shim_agent.configure(AgentSettings(slow_write_seconds=0))
    with open_store(tmp_path / "slow") as store:
        store.write("session/prj_1/ses_1", {"small": True})
    assert [(r.levelname, r.getMessage().split(",")[0]) for r in caplog.records] == [
        ("WARNING", "slow write: session/prj_1/ses_1")
    ]
