"""What the plugin does, without hooks: a settings object, from code or the environment."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

N = TypeVar("N", int, float)

DEFAULT_ROUTES: Mapping[str, str] = MappingProxyType(
    {
        "session_diff": "atomic",
        "part": "journal",
        "message": "journal",
        "session": "atomic",
        "project": "atomic",
        "config": "lockfile",
    }
)
"""Key prefix to backend; the README gives the measurement behind each line."""

ENV_ENABLED = "STORAGE_SHIM_AGENT"
ENV_ROUTES = "STORAGE_SHIM_AGENT_ROUTES"
ENV_APPLIES_TO = "STORAGE_SHIM_AGENT_APPLIES_TO"
ENV_SLOW_SECONDS = "STORAGE_SHIM_AGENT_SLOW_SECONDS"
ENV_LARGE_BYTES = "STORAGE_SHIM_AGENT_LARGE_BYTES"
_OFF = frozenset({"0", "off", "false", "no"})


@dataclass(frozen=True)
class AgentSettings:
    """How the plugin routes and reports; a store reads them once, when it opens."""

    routes: Mapping[str, str] = field(default_factory=lambda: DEFAULT_ROUTES)
    """``{prefix: backend}``; a prefix is one or more key segments (``"session"``,
    ``"config/ui"``), and the longest matching prefix wins, as in ``routes=``."""
    applies_to: frozenset[str] = frozenset({"atomic"})
    """The plugin routes only in stores whose fallback backend is one of these:
    ``atomic`` is the library's default for a directory, while a host that picked
    another backend (``memory`` in its tests, ``journal``, a database) chose its
    write strategy itself."""
    slow_write_seconds: float = 0.5
    """Writes that took at least this long are logged as warnings."""
    large_write_bytes: int = 1 << 20
    """Writes of at least this many bytes are logged at INFO level."""
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "routes", MappingProxyType(dict(self.routes)))
        object.__setattr__(self, "applies_to", frozenset(self.applies_to))
        if self.slow_write_seconds < 0 or self.large_write_bytes < 0:
            raise ValueError("slow_write_seconds and large_write_bytes must not be negative")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AgentSettings:
        """The defaults, changed by the ``STORAGE_SHIM_AGENT*`` environment variables.

        ``STORAGE_SHIM_AGENT=off`` disables the plugin. ``STORAGE_SHIM_AGENT_ROUTES``
        changes the table: ``"session_diff=journal,todo=atomic,config="`` (an empty
        backend removes the prefix). ``STORAGE_SHIM_AGENT_APPLIES_TO`` is a comma
        list of fallback backends. ``..._SLOW_SECONDS`` and ``..._LARGE_BYTES`` set
        the logging thresholds.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        routes = dict(defaults.routes)
        for item in _items(env.get(ENV_ROUTES, "")):
            prefix, sep, backend = item.partition("=")
            if not sep or not prefix.strip():
                raise ValueError(f"{ENV_ROUTES}: {item!r} is not prefix=backend")
            if backend.strip():
                routes[prefix.strip()] = backend.strip()
            else:
                routes.pop(prefix.strip(), None)
        applies_to = env.get(ENV_APPLIES_TO)
        return cls(
            routes=routes,
            applies_to=frozenset(_items(applies_to)) if applies_to else defaults.applies_to,
            slow_write_seconds=_number(env, ENV_SLOW_SECONDS, float, defaults.slow_write_seconds),
            large_write_bytes=_number(env, ENV_LARGE_BYTES, int, defaults.large_write_bytes),
            enabled=env.get(ENV_ENABLED, "on").strip().lower() not in _OFF,
        )


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _number(env: Mapping[str, str], name: str, kind: type[N], default: N) -> N:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number") from None


@dataclass
class _Configured:
    settings: AgentSettings | None = None
    guard: threading.Lock = field(default_factory=threading.Lock)


_configured = _Configured()


def configure(settings: AgentSettings | None) -> None:
    """Use ``settings`` for the stores opened from now on (None: the environment again).

    An open store keeps the settings it opened with: a key must keep its backend
    for the life of the store.
    """
    with _configured.guard:
        _configured.settings = settings


def current_settings() -> AgentSettings:
    """What :func:`configure` set, or else :meth:`AgentSettings.from_env`."""
    with _configured.guard:
        settings = _configured.settings
    return settings if settings is not None else AgentSettings.from_env()
