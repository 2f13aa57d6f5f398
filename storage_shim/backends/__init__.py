"""The built-in backends, each an internal plugin registering through ``storage_shim_backends``."""

from __future__ import annotations

from types import ModuleType

from . import atomic, journal, lockfile, memory, naive
from .atomic import AtomicBackend
from .files import FileBackend
from .journal import JournalBackend
from .lockfile import LockfileBackend
from .memory import MemoryBackend
from .naive import NaiveBackend

BUILTIN_PLUGINS: tuple[ModuleType, ...] = (naive, lockfile, atomic, journal, memory)

__all__ = [
    "BUILTIN_PLUGINS",
    "AtomicBackend",
    "FileBackend",
    "JournalBackend",
    "LockfileBackend",
    "MemoryBackend",
    "NaiveBackend",
]
