"""Per-thread state shared by the store and the file backends."""

from __future__ import annotations

import threading

from ._types import Key


class ThreadKeys(threading.local):
    """A set of keys of the current thread (the keys it holds a lock on, or is updating)."""

    def __init__(self) -> None:
        self.keys: set[Key] = set()


class ThreadFlag(threading.local):
    """A flag of the current thread (it has a transaction open)."""

    def __init__(self) -> None:
        self.active = False
