"""Routing keys to backends by most specific prefix, like httpx's transport mounts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ._types import Key, KeyLike
from .keys import parse_prefix
from .markers import hookimpl


class Routes:
    """A host's ``{prefix: backend}`` table; the longest matching prefix wins.

    ``()`` (or ``""``) matches every key, so it acts as a default below the
    more specific entries.
    """

    def __init__(self, table: Mapping[KeyLike, str] | None = None) -> None:
        self.table: dict[Key, str] = {parse_prefix(p): name for p, name in (table or {}).items()}
        self._lengths = sorted({len(p) for p in self.table}, reverse=True)

    def match(self, key: Key) -> str | None:
        for n in self._lengths:
            if n <= len(key):
                name = self.table.get(key[:n])
                if name is not None:
                    return name
        return None

    def backends(self) -> set[str]:
        return set(self.table.values())


class HostRoutes:
    """The host's table as the lowest-priority implementation of ``storage_shim_route``."""

    def __init__(self, routes: Routes) -> None:
        self.routes = routes

    @hookimpl(trylast=True)
    def storage_shim_route(self, key: Key) -> str | None:
        return self.routes.match(key)

    @hookimpl
    def storage_shim_route_targets(self) -> Iterable[str]:
        return self.routes.backends()
