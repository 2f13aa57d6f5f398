"""The entry point (group ``storage_shim``, name ``sqlite``) that registers the backend."""

from __future__ import annotations

from collections.abc import Iterable

from storage_shim import BackendSpec, hookimpl

from .backend import SqliteBackend
from .location import SCHEME


@hookimpl
def storage_shim_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="sqlite",
            factory=SqliteBackend,
            description="one SQLite database in WAL mode; transactions, cross-process update()",
            schemes=(SCHEME,),
        )
    ]
