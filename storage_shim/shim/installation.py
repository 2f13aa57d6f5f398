"""One installed root: its settings, its store, and which of its files the shim manages."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..backend import DURABILITY_LEVELS, Durability, accepted_options
from ..errors import InvalidKeyError, StoreClosedError
from ..fs import FileSystem
from ..keys import SUFFIX, parse_key
from ..store import Store, backend_specs, open_store
from .errors import ShimInstallError
from .targets import DocumentTarget, FileTarget, Target

DEFAULT_JSON_SUFFIXES = (".json",)
DEFAULT_LINE_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class Settings:
    root: str
    """Absolute, normalised, with symbolic links resolved."""
    backend: str = "atomic"
    durability: Durability = "fsync"
    json_suffixes: tuple[str, ...] = DEFAULT_JSON_SUFFIXES
    line_suffixes: tuple[str, ...] = DEFAULT_LINE_SUFFIXES
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY_LEVELS:
            raise ValueError(
                f"durability must be one of {', '.join(DURABILITY_LEVELS)}, not {self.durability!r}"
            )
        for suffix in (*self.json_suffixes, *self.line_suffixes):
            if not suffix.startswith(".") or len(suffix) < 2 or os.sep in suffix:
                raise ValueError(f"{suffix!r} is not a file name suffix such as '.json'")
        object.__setattr__(self, "json_suffixes", tuple(s.lower() for s in self.json_suffixes))
        object.__setattr__(self, "line_suffixes", tuple(s.lower() for s in self.line_suffixes))


class Installation:
    """The shim's state for one root, shared by every :class:`ShimHandle` installing it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.root
        self.fs: FileSystem = settings.options.get("fs") or FileSystem()
        self.sync = settings.durability != "none"
        self.full = settings.durability == "full"
        self.users = 0
        self.spellings: dict[str, None] = {self.root: None}
        """The root as resolved, and as spelled by each install() that reached it by a link."""
        self.active = True
        self._guard = threading.Lock()
        self._store: Store | None = None
        self._pid = os.getpid()
        self._check_backend()
        self.store()  # open now: a wrong option or backend fails install(), not a later open()

    def _check_backend(self) -> None:
        spec = backend_specs(self.settings.options.get("plugins", ())).get(self.settings.backend)
        if spec is not None and spec.capabilities is not None and not spec.capabilities.persistent:
            raise ShimInstallError(
                f"backend {spec.name!r} keeps its documents in memory; the shim needs one that"
                " stores them (atomic, journal, lockfile)"
            )

    def store_options(self) -> dict[str, Any]:
        """The journal publishes before acknowledging: plain readers see each commit at once."""
        options = dict(self.settings.options)
        spec = backend_specs(options.get("plugins", ())).get(self.settings.backend)
        if spec is not None and "publish_delay" not in options:
            options.update(accepted_options(spec.factory, {"publish_delay": None}))
        return options

    def _open(self) -> Store:
        return open_store(
            self.root,
            self.settings.backend,
            durability=self.settings.durability,
            **self.store_options(),
        )

    def store(self) -> Store:
        """The open store; opened again in a forked child."""
        store = self._store
        if store is not None and self._pid == os.getpid():
            return store
        with self._guard:
            if not self.active:
                raise StoreClosedError(f"the shim of {self.root} is uninstalled")
            if self._store is None or self._pid != os.getpid():
                self._store = self._open()
                self._pid = os.getpid()
            return self._store

    @contextlib.contextmanager
    def using_store(self) -> Iterator[Store]:
        """The store; once uninstalled, one opened for the call (handles outlive the shim)."""
        if self.active:
            yield self.store()
            return
        with self._open() as store:
            yield store

    def close(self) -> None:
        with self._guard:
            self.active = False
            store, self._store = self._store, None
        if store is not None and self._pid == os.getpid():
            store.close()

    def target(self, relative: str) -> Target | None:
        """What manages ``<root>/<relative>``; None leaves the file to the plain ``open()``.

        Names starting with a dot anywhere on the way (the library's own
        ``.storage_shim/``, temporary files, a user's dotfiles) are left alone.
        """
        segments = relative.split(os.sep)
        if any(not s or s[0] == "." for s in segments):
            return None
        path = os.path.join(self.root, relative)
        name = segments[-1].lower()
        if name.endswith(self.settings.line_suffixes):
            return FileTarget(self, path, "lines")
        if not name.endswith(self.settings.json_suffixes):
            return None
        if segments[-1].endswith(SUFFIX):
            try:
                key = parse_key((*segments[:-1], segments[-1][: -len(SUFFIX)]))
            except InvalidKeyError:
                pass
            else:
                return DocumentTarget(self, key, path)
        return FileTarget(self, path, "json")
