"""With the distribution installed, a host's unchanged open_store() routes the agent layout.

These tests need storage-shim-agent installed (its entry point is what they
test); they fail, not skip, without it.
"""

from __future__ import annotations

import importlib.metadata
import threading
from pathlib import Path
from typing import Any

import pytest
import storage_shim_agent
from storage_shim_agent import plugin

import storage_shim as ss


def test_the_distribution_publishes_its_entry_point() -> None:
    found = [
        ep for ep in importlib.metadata.entry_points(group="storage_shim") if ep.name == "agent"
    ]
    assert len(found) == 1, "install storage-shim-agent (pip install -e plugins/storage-shim-agent)"
    assert found[0].dist is not None
    assert found[0].dist.name == "storage-shim-agent"
    assert found[0].load() is plugin


def test_installing_changes_routing_with_no_change_to_the_host(tmp_path: Path) -> None:
    with ss.open_store(tmp_path) as store:  # what a host already writes: no plugins=, no routes=
        assert store.plugin_manager.get_plugin("agent") is plugin
        assert {
            prefix: store.backend_for(f"{prefix}/x/y")
            for prefix in storage_shim_agent.DEFAULT_ROUTES
        } == dict(storage_shim_agent.DEFAULT_ROUTES)
        assert store.backend_for("todo/ses_1") == "atomic"  # not in the table: the default
        assert store.targets == {"atomic", "journal", "lockfile"}
        assert storage_shim_agent.settings_of(store) == storage_shim_agent.AgentSettings()


def test_without_the_distribution_nothing_is_routed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same call with the entry point hidden, as before installing."""
    real = importlib.metadata.entry_points

    def without_agent(*, group: str) -> importlib.metadata.EntryPoints:
        return importlib.metadata.EntryPoints(ep for ep in real(group=group) if ep.name != "agent")

    monkeypatch.setattr(importlib.metadata, "entry_points", without_agent)
    with ss.open_store(tmp_path) as store:
        assert store.plugin_manager.get_plugin("agent") is None
        assert store.backend_for("part/msg_1/prt_1") == "atomic"
        assert store.targets == {"atomic"}


def test_the_host_s_explicit_routes_win(tmp_path: Path) -> None:
    routes: dict[ss.KeyLike, str] = {"part": "atomic", "config/ui": "journal"}
    with ss.open_store(tmp_path, routes=routes) as store:
        assert store.backend_for("part/msg_1/prt_1") == "atomic"
        assert store.backend_for("config/ui") == "journal"
        assert store.backend_for("config/ui/theme") == "journal"
        assert store.backend_for("config/keys") == "lockfile"
        assert store.backend_for("message/ses_1/msg_1") == "journal"
    with ss.open_store(tmp_path / "catch-all", routes={"": "lockfile"}) as store:
        assert {store.backend_for(f"{p}/x") for p in storage_shim_agent.DEFAULT_ROUTES} == {
            "lockfile"
        }


def test_a_host_that_chose_a_backend_keeps_it(tmp_path: Path) -> None:
    for backend in ("memory", "journal", "lockfile"):
        with ss.open_store(tmp_path / backend, backend=backend) as store:
            assert {store.backend_for(f"{p}/x") for p in storage_shim_agent.DEFAULT_ROUTES} == {
                backend
            }
            assert store.targets == {backend}
            assert storage_shim_agent.settings_of(store) is None


def test_the_environment_configures_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_SHIM_AGENT_ROUTES", "todo=journal, config=, session_diff=journal")
    with ss.open_store(tmp_path / "a") as store:
        assert store.backend_for("todo/ses_1") == "journal"
        assert store.backend_for("config/ui") == "atomic"
        assert store.backend_for("session_diff/ses_1") == "journal"
        assert store.targets == {"atomic", "journal"}
    monkeypatch.setenv("STORAGE_SHIM_AGENT", "off")
    with ss.open_store(tmp_path / "b") as store:
        assert store.backend_for("part/msg_1/prt_1") == "atomic"
        assert store.targets == {"atomic"}
    monkeypatch.setenv("STORAGE_SHIM_AGENT", "on")
    monkeypatch.setenv("STORAGE_SHIM_AGENT_ROUTES", "part")
    with pytest.raises(ss.PluginError, match="not prefix=backend"):
        ss.open_store(tmp_path / "c")
    monkeypatch.setenv("STORAGE_SHIM_AGENT_ROUTES", "part=no_such_backend")
    with pytest.raises(ss.UnknownBackendError, match="no_such_backend"):
        ss.open_store(tmp_path / "d")


def serve_a_day(store: ss.Store) -> dict[ss.Key, Any]:
    """What a local agent server writes in a few sessions; returns the final documents."""
    expected: dict[ss.Key, Any] = {}

    def write(key: str, value: Any) -> None:
        store.write(key, value)
        expected[ss.parse_key(key)] = value

    write("config/ui", {"theme": "dark"})
    write("config/ui", {"theme": "light", "font": 13})
    write("config/keys", {"submit": "enter"})
    write("project/prj_1", {"worktree": "/src/app", "vcs": "git"})
    lock = threading.Lock()

    def run_session(s: int) -> None:
        session = f"session/prj_1/ses_{s}"
        store.write(session, {"title": f"session {s}", "messages": 0})
        for m in range(3):
            message = f"message/ses_{s}/msg_{s}_{m}"
            store.write(message, {"role": "assistant", "done": False})
            text = ""
            for t in range(20):  # a streamed text part, rewritten per token
                text += f"t{t} "
                store.write(f"part/msg_{s}_{m}/prt_0", {"type": "text", "text": text})
            store.update(message, lambda doc: {**doc, "done": True})
            store.update(session, lambda doc: {**doc, "messages": doc["messages"] + 1})
            diff = [{"file": f"f{i}.py", "after": f"{s}.{m}" * 3000} for i in range(10)]
            store.write(f"session_diff/ses_{s}", diff)
            with lock:
                expected[("message", f"ses_{s}", f"msg_{s}_{m}")] = {
                    "role": "assistant",
                    "done": True,
                }
                expected[("part", f"msg_{s}_{m}", "prt_0")] = {"type": "text", "text": text}
                expected[("session_diff", f"ses_{s}")] = diff
        with store.transaction() as tx:  # a message and its part, all or nothing
            tx.write(f"message/ses_{s}/msg_{s}_tool", {"role": "tool"})
            tx.write(f"part/msg_{s}_tool/prt_0", {"type": "tool", "state": "done"})
        with lock:
            expected[("session", "prj_1", f"ses_{s}")] = {"title": f"session {s}", "messages": 3}
            expected[("message", f"ses_{s}", f"msg_{s}_tool")] = {"role": "tool"}
            expected[("part", f"msg_{s}_tool", "prt_0")] = {"type": "tool", "state": "done"}
            expected[("todo", f"ses_{s}")] = [{"content": "ship", "status": "done"}]
        store.write(f"todo/ses_{s}", [{"content": "ship", "status": "done"}])

    sessions = [threading.Thread(target=run_session, args=(s,)) for s in range(3)]
    for thread in sessions:
        thread.start()
    for thread in sessions:
        thread.join()
    return expected


def test_a_realistic_layout_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ss.open_store(tmp_path) as store:
        expected = serve_a_day(store)
        assert store.read_many(expected) == expected
        assert store.list() == sorted(expected)
        kinds = {key[0]: store.backend_for(key) for key in expected}
        assert kinds == {**storage_shim_agent.DEFAULT_ROUTES, "todo": "atomic"}
        counts = {prefix: s.count for prefix, s in storage_shim_agent.stats(store).items()}
        assert counts == {
            "config": 3,
            "message": 3 * (3 + 3 + 1),
            "part": 3 * (3 * 20 + 1),
            "project": 1,
            "session": 3 * (1 + 3),
            "session_diff": 3 * 3,
            "todo": 3,
        }
    with ss.open_store(tmp_path) as reopened:
        assert reopened.read_many(expected) == expected
        assert reopened.list() == sorted(expected)
    # After a clean close the files hold everything: without the plugin, they read the same.
    monkeypatch.setenv("STORAGE_SHIM_AGENT", "off")
    with ss.open_store(tmp_path) as plain:
        assert plain.targets == {"atomic"}
        assert plain.read_many(expected) == expected


def test_config_documents_keep_their_inode(tmp_path: Path) -> None:
    """lockfile rewrites in place: an editor or a watcher holding the file sees the change."""
    with ss.open_store(tmp_path) as store:
        store.write("config/ui", {"theme": "dark"})
        store.write("session/prj_1/ses_1", {"title": "a"})
        config, session = (
            tmp_path / "config" / "ui.json",
            tmp_path / "session" / "prj_1" / "ses_1.json",
        )
        before = config.stat().st_ino, session.stat().st_ino
        with config.open("rb") as held:
            store.write("config/ui", {"theme": "light"})
            store.write("session/prj_1/ses_1", {"title": "b"})
            assert held.read() == b'{"theme":"light"}'
        after = config.stat().st_ino, session.stat().st_ino
    assert after[0] == before[0]
    assert after[1] != before[1]  # the control: atomic renames a new file into place
