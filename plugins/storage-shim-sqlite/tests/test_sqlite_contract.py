"""The core's conformance suite, run against the installed ``sqlite`` backend."""

from __future__ import annotations

from storage_shim.testing import BackendContract


class TestSqliteContract(BackendContract):
    backend = "sqlite"
