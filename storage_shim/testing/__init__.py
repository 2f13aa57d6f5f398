"""Testing helpers: the backend conformance suite and a pytest plugin for hosts.

``from storage_shim.testing import BackendContract`` imports pytest and
Hypothesis; the pytest plugin (:mod:`storage_shim.testing.fixtures`, loaded in
every test run of every host) and the worker processes import this package
too, so the contract is only loaded when it is asked for.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contract import BackendContract
    from .crash import (
        CrashReport,
        Doc,
        Limits,
        Step,
        Workload,
        check_crash_safety,
        register_op,
        standard_workloads,
    )
    from .simfs import SimFS

__all__ = [
    "BackendContract",
    "CrashReport",
    "Doc",
    "Limits",
    "SimFS",
    "Step",
    "Workload",
    "check_crash_safety",
    "register_op",
    "standard_workloads",
]
_CRASH_NAMES = frozenset(__all__) - {"BackendContract", "SimFS"}


def __getattr__(name: str) -> Any:
    if name == "BackendContract":
        import pytest  # noqa: PLC0415  # see the module docstring

        if f"{__name__}.contract" not in sys.modules:  # its asserts then explain their failures
            pytest.register_assert_rewrite(f"{__name__}.contract")
        from .contract import BackendContract  # noqa: PLC0415

        return BackendContract
    if name in _CRASH_NAMES:
        from . import crash  # noqa: PLC0415  # see the module docstring

        return getattr(crash, name)
    if name == "SimFS":
        from .simfs import SimFS  # noqa: PLC0415

        return SimFS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
