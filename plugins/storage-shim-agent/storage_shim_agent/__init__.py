"""storage-shim-agent: write strategies for the storage layout of a local agent server.

Installed, it routes ``session_diff/*``, ``part/*``, ``message/*``, ``session/*``,
``project/*`` and ``config/*`` to the backends its README justifies, in every
store whose host left the choice to the library, and keeps write statistics.

    with ss.open_store(location) as store:    # no plugins=: installed is enough
        store.backend_for("part/msg_1/prt_1")   # 'journal'
        store.write("part/msg_1/prt_1", {"type": "text", "text": "hi"})
        storage_shim_agent.stats(store)["part"].count   # 1
"""

from __future__ import annotations

from collections.abc import Mapping

import storage_shim as ss

from .__about__ import __version__
from .plugin import state_of
from .settings import DEFAULT_ROUTES, AgentSettings, configure, current_settings
from .stats import PrefixStats

__all__ = [
    "DEFAULT_ROUTES",
    "AgentSettings",
    "PrefixStats",
    "__version__",
    "configure",
    "current_settings",
    "reset_stats",
    "settings_of",
    "stats",
]


def stats(store: ss.Store) -> Mapping[str, PrefixStats]:
    """The write statistics of ``store`` so far, by first key segment (a snapshot)."""
    return state_of(store).stats.snapshot()


def reset_stats(store: ss.Store) -> None:
    state_of(store).stats.clear()


def settings_of(store: ss.Store) -> AgentSettings | None:
    """The settings ``store`` opened with; None when the plugin does not route in it."""
    state = state_of(store)
    return state.settings if state.routes is not None else None
