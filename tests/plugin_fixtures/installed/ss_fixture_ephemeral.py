"""A plugin as a third party would publish it: one backend, one routing rule."""

from __future__ import annotations

from collections.abc import Iterable

import storage_shim as ss
from storage_shim.backends import MemoryBackend

SCRATCH = "scratch"


class EphemeralBackend(MemoryBackend):
    """Keeps scratch documents in memory, so they never reach the disk."""


@ss.hookimpl
def storage_shim_backends() -> Iterable[ss.BackendSpec]:
    return [ss.BackendSpec("ephemeral", EphemeralBackend, "scratch documents, in memory")]


@ss.hookimpl
def storage_shim_route(key: ss.Key) -> str | None:
    return "ephemeral" if key[0] == SCRATCH else None


@ss.hookimpl
def storage_shim_route_targets() -> Iterable[str]:
    return ["ephemeral"]
