"""Shared test configuration: the backends under test, the report header, the host plugin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import storage_shim
from storage_shim.testing import fixtures

pytest_plugins = ["pytester"]

BUILTIN_BACKENDS = ("naive", "lockfile", "atomic", "journal", "memory")
BACKENDS_VARIABLE = "STORAGE_SHIM_TEST_BACKENDS"


def selected_backends() -> tuple[str, ...]:
    """The built-ins named in $STORAGE_SHIM_TEST_BACKENDS (a comma list; unset or empty: all)."""
    names = {n.strip() for n in os.environ.get(BACKENDS_VARIABLE, "").split(",") if n.strip()}
    unknown = names - set(BUILTIN_BACKENDS)
    if unknown:
        raise pytest.UsageError(
            f"{BACKENDS_VARIABLE} names unknown backend(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(BUILTIN_BACKENDS)}"
        )
    return tuple(n for n in BUILTIN_BACKENDS if n in names) or BUILTIN_BACKENDS


GENERAL_MODULES = frozenset(
    {
        "test_aio.py",
        "test_bench.py",
        "test_cli.py",
        "test_codec.py",
        "test_docs.py",
        "test_doctor.py",
        "test_keys.py",
        "test_migrate.py",
        "test_plugins.py",
        "test_shim.py",
    }
)
"""Tests of no backend in particular: they run where the default backend, atomic, is tested."""
BACKEND_MODULES = {"test_journal.py": "journal"}
"""Tests of one backend: they run where it is tested."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Run each test once per interpreter in tox, not once per backend environment.

    With $STORAGE_SHIM_TEST_BACKENDS unset every test runs; this only
    deselects (it never skips) what another environment of the matrix runs.
    """
    selected = selected_backends()
    name = collection_path.name
    if name in BACKEND_MODULES:
        return BACKEND_MODULES[name] not in selected or None
    if name in GENERAL_MODULES:
        return "atomic" not in selected or None
    return None


def pytest_configure(config: pytest.Config) -> None:
    selected_backends()
    # Installed, the package's pytest11 entry point has loaded the plugin already.
    if not config.pluginmanager.is_registered(fixtures):
        config.pluginmanager.register(fixtures, "storage_shim")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"storage_shim: {storage_shim.__file__}",
        f"backends under test ({BACKENDS_VARIABLE}): {', '.join(selected_backends())}",
    ]
