"""Building a store's own plugin manager: hook specs, built-ins, entry points, host plugins.

There is no global manager: each store builds one, so tests and hosts that
open several stores never see each other's plugins.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from . import hookspecs
from .backend import BackendSpec
from .backends import BUILTIN_PLUGINS
from .errors import DuplicateBackendError, PluginError
from .markers import PROJECT

ENTRY_POINT_GROUP = PROJECT


def get_plugin_manager(
    plugins: Iterable[object] = (), *, entry_points: bool = True
) -> pluggy.PluginManager:
    """A fresh manager: specs, then built-in backends, then installed plugins, then ``plugins``.

    Later registrations run first, so a host's own plugins can override
    installed ones, which can override the built-ins.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for module in BUILTIN_PLUGINS:
        pm.register(module, name=module.__name__)
    if entry_points:
        load_entry_points(pm)
    for plugin in plugins:
        if pm.is_registered(plugin):
            continue
        try:
            pm.register(plugin, name=plugin_name(pm, plugin))
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {plugin!r} is invalid: {exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} (is the hook name misspelt?)") from exc
    return pm


def plugin_name(pm: pluggy.PluginManager, plugin: object) -> str:
    """A readable, unique name for a host's plugin, used in error messages.

    A module or class goes by its ``__name__``, an instance by its class and
    address; a name already taken gets the object's address appended.
    """
    name = getattr(plugin, "__name__", None)
    if not isinstance(name, str):
        return f"{type(plugin).__module__}.{type(plugin).__qualname__}@{id(plugin):x}"
    return name if pm.get_plugin(name) is None else f"{name}@{id(plugin):x}"


def load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register every plugin of the ``storage_shim`` group under its entry-point name.

    A plugin that fails to import stops the store from opening with an error
    naming it: silently running without a plugin that routes keys would write
    documents where the host does not expect them.
    """
    for ep in _entry_points():
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}, from {dist}) failed to load: {exc}"
            ) from exc


_scanned: tuple[tuple[object, ...], tuple[Any, ...]] | None = None


def _entry_points() -> tuple[Any, ...]:
    """The group's entry points, scanned again only when a ``sys.path`` folder changed.

    Scanning every installed distribution costs most of opening a store;
    installing or removing one changes its folder's modification time.
    """
    global _scanned  # noqa: PLW0603  # one cache per process, like importlib's own
    import importlib.metadata  # noqa: PLC0415  # here, not at import: it costs more than the rest

    scan = importlib.metadata.entry_points  # a test may replace it
    state = (scan, *((entry, _mtime(entry)) for entry in sys.path))
    if _scanned is None or _scanned[0] != state:
        found = tuple(scan(group=ENTRY_POINT_GROUP))
        _scanned = (state, found)
    return _scanned[1]


def _mtime(entry: str) -> int:
    try:
        return os.stat(entry or ".").st_mtime_ns
    except OSError:
        return -1


def collect_backend_specs(pm: pluggy.PluginManager) -> Mapping[str, BackendSpec]:
    """Every registered backend by name; duplicates raise one error naming all providers."""
    # Each implementation is called on its own, not through the hook, so that every
    # spec can be attributed to the plugin that returned it.
    providers: defaultdict[str, list[str]] = defaultdict(list)
    specs: dict[str, BackendSpec] = {}
    for impl in reversed(pm.hook.storage_shim_backends.get_hookimpls()):
        try:
            registered: list[object] = list(impl.function() or ())  # type: ignore[call-overload]
        except Exception as exc:
            raise PluginError(
                f"plugin {impl.plugin_name!r} failed in storage_shim_backends: {exc}"
            ) from exc
        for spec in registered:
            if not isinstance(spec, BackendSpec):
                raise PluginError(
                    f"plugin {impl.plugin_name!r} returned {spec!r} from storage_shim_backends;"
                    " expected BackendSpec objects"
                )
            providers[spec.name].append(impl.plugin_name)
            specs.setdefault(spec.name, spec)
    clashes = {name: names for name, names in providers.items() if len(names) > 1}
    if clashes:
        raise DuplicateBackendError(clashes)
    return dict(sorted(specs.items()))
