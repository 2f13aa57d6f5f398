"""Torture: race real processes on each backend and count what goes wrong.

:func:`run_torture` rewrites a self-validating document in one process while
others read it (torn reads), then has several processes ``update()`` one
counter (lost updates); :func:`run_kill_rounds` kills a writer with SIGKILL at
random moments and checks that each document is its old or new version and
that no acknowledged write was lost. ``storage-shim torture`` prints the table.
"""

from __future__ import annotations

from ..progress import Progress
from .document import GOOD, TORN, classify_read, intact_version, make_document
from .errors import TortureError
from .kill import KillReport, KillRound, run_kill_rounds
from .runner import (
    DEFAULT_READERS,
    DEFAULT_SECONDS,
    DEFAULT_SIZE,
    DEFAULT_UPDATERS,
    DEFAULT_UPDATES,
    Result,
    run_torture,
    select_backends,
)

__all__ = [
    "DEFAULT_READERS",
    "DEFAULT_SECONDS",
    "DEFAULT_SIZE",
    "DEFAULT_UPDATERS",
    "DEFAULT_UPDATES",
    "GOOD",
    "TORN",
    "KillReport",
    "KillRound",
    "Progress",
    "Result",
    "TortureError",
    "classify_read",
    "intact_version",
    "make_document",
    "run_kill_rounds",
    "run_torture",
    "select_backends",
]
