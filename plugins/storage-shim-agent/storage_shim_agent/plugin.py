"""The hook implementations, published under the ``storage_shim`` entry-point group.

Each store gets its own state, made from the settings current when it opens
(see :mod:`storage_shim_agent.settings`): its routing table, or none when the
plugin stays out of that store, and its write statistics.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

import storage_shim as ss

from .settings import AgentSettings, current_settings
from .stats import WriteStats

logger = logging.getLogger("storage_shim_agent")


@dataclass
class StoreState:
    settings: AgentSettings
    routes: ss.Routes | None
    """None: the plugin does not route in this store."""
    stats: WriteStats = field(default_factory=WriteStats)


_states: weakref.WeakKeyDictionary[ss.Store, StoreState] = weakref.WeakKeyDictionary()
_guard = threading.Lock()


def state_of(store: ss.Store) -> StoreState:
    """The plugin's state for ``store``, made on the first hook call (the store is opening)."""
    with _guard:
        state = _states.get(store)
        if state is None:
            settings = current_settings()
            table: dict[ss.KeyLike, str] = dict(settings.routes.items())
            routes = ss.Routes(table) if routes_in(store, settings) else None
            state = _states[store] = StoreState(settings, routes)
        return state


def routes_in(store: ss.Store, settings: AgentSettings) -> bool:
    """Enabled, and the host left the write strategy to the library (see ``applies_to``)."""
    return settings.enabled and store.default_backend in settings.applies_to


@ss.hookimpl
def storage_shim_route_targets(store: ss.Store) -> Iterable[str]:
    routes = state_of(store).routes
    return routes.backends() if routes is not None else ()


@ss.hookimpl
def storage_shim_route(key: ss.Key, store: ss.Store) -> str | None:
    """The table's backend for ``key``, unless the host's own ``routes=`` names one."""
    routes = state_of(store).routes
    if routes is None or store.routes.match(key) is not None:
        return None
    return routes.match(key)


@ss.hookimpl
def storage_shim_after_write(store: ss.Store, key: ss.Key, receipt: ss.Receipt) -> None:
    state = state_of(store)
    if not state.settings.enabled:
        return
    seconds = float(getattr(receipt, "seconds", 0.0))
    state.stats.record(key[0], receipt.backend, receipt.bytes, seconds)
    settings = state.settings
    if seconds >= settings.slow_write_seconds:
        logger.warning(
            "slow write: %s, %d bytes, took %.3f s on %s",
            "/".join(key),
            receipt.bytes,
            seconds,
            receipt.backend,
        )
    elif receipt.bytes >= settings.large_write_bytes:
        logger.info(
            "large write: %s, %d bytes, %.3f s on %s",
            "/".join(key),
            receipt.bytes,
            seconds,
            receipt.backend,
        )
