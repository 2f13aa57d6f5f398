"""The pluggy markers. A leaf module: built-in backends import it without a cycle."""

from __future__ import annotations

import pluggy

PROJECT = "storage_shim"
"""The pluggy project name, and the entry-point group plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
