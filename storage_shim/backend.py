"""What a backend is: the base class plugin authors subclass, and its registration record.

A backend only moves bytes. Keys arrive validated, values arrive serialised; the
:class:`~storage_shim.Store` does keys, JSON, routing, hooks and read retries.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from ._types import Key
from .errors import NotFoundError, UnsupportedOperationError

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
Durability = Literal["none", "fsync", "full"]
DURABILITY_LEVELS: tuple[Durability, ...] = ("none", "fsync", "full")


@dataclass(frozen=True)
class Capabilities:
    """What a backend promises; ``storage-shim backends`` shows it as the guarantee table.

    The conformance suite (:mod:`storage_shim.testing`) tests ``atomic_reads``,
    ``cross_process`` and ``persistent``; see ``docs/guarantees.md`` for the
    tests behind each built-in backend's answers.
    """

    atomic_reads: bool
    """A reader using the library never sees a partly written document."""
    crash_safe: bool
    """After a crash or power loss each document is its old or its new version."""
    durable: bool
    """With ``durability`` other than ``"none"``, an acknowledged write survives power loss."""
    cross_process: bool
    """``update()`` is atomic across processes, not only across threads."""
    transactions: bool = False
    """Several documents can be written all-or-nothing."""
    persistent: bool = True
    """Documents outlive the backend object (false only for the in-memory test double)."""


@dataclass(frozen=True)
class WriteOutcome:
    """What a backend did to make one write durable; the store turns it into a receipt."""

    file_synced: bool
    dir_synced: bool
    retries: int = 0


@dataclass(frozen=True)
class Receipt:
    """Returned by :meth:`Store.write`: how a write was carried out.

    ``durability`` is the level the store was asked for; ``file_synced`` says
    the document's bytes were flushed, ``dir_synced`` that its directory entry
    is durable (flushed now, or unchanged by an in-place rewrite of a durable
    file); ``retries`` counts transient failures that were retried.
    """

    backend: str
    key: Key
    bytes: int
    durability: Durability
    file_synced: bool
    dir_synced: bool
    retries: int = 0
    seconds: float = 0.0
    """Wall time the backend spent on the write (for a transaction, on its whole commit)."""

    @property
    def durable(self) -> bool:
        """True when both the data and its directory entry were flushed to stable storage."""
        return self.file_synced and self.dir_synced


class BackendTransaction(abc.ABC):
    """What :meth:`Backend.begin` yields: reads of one committed state, and one commit.

    The store buffers a transaction's writes and hands them to :meth:`commit`
    all at once; leaving the ``begin()`` block without committing discards them.
    """

    @abc.abstractmethod
    def read(self, key: Key) -> bytes:
        """The committed bytes as of this transaction; :class:`NotFoundError` when missing."""

    @abc.abstractmethod
    def commit(self, changes: Mapping[Key, bytes | None]) -> WriteOutcome:
        """Apply every change (None removes the document) all-or-nothing."""


class Backend(abc.ABC):
    """Base class of every backend.

    Subclasses implement :meth:`read`, :meth:`write`, :meth:`remove` and
    :meth:`list`, declare :attr:`capabilities`, and override :meth:`lock` when
    they can exclude other processes. Keys are validated tuples of segments.
    """

    capabilities: ClassVar[Capabilities]
    durability: Durability = "fsync"

    @abc.abstractmethod
    def read(self, key: Key) -> bytes:
        """Return the stored bytes; raise :class:`NotFoundError` when there are none."""

    @abc.abstractmethod
    def write(self, key: Key, data: bytes) -> WriteOutcome:
        """Store ``data`` under ``key``, replacing what was there."""

    @abc.abstractmethod
    def remove(self, key: Key) -> bool:
        """Delete the document; return whether it existed."""

    @abc.abstractmethod
    def list(self, prefix: Key) -> Iterable[Key]:
        """Yield every stored key that starts with ``prefix``, in any order."""

    def exists(self, key: Key) -> bool:
        try:
            self.read(key)
        except NotFoundError:
            return False
        return True

    def read_many(self, keys: Iterable[Key]) -> dict[Key, bytes]:
        """The stored bytes of each key that has a document.

        Backends with ``transactions`` return them from one committed state; this
        default reads one key after the other.
        """
        found: dict[Key, bytes] = {}
        for key in keys:
            with contextlib.suppress(NotFoundError):
                found[key] = self.read(key)
        return found

    def checkpoint(self) -> None:  # noqa: B027  # a backend without a log has nothing to do
        """Make every acknowledged change durable in its file and compact any log.

        Backends without a log have nothing to do; :meth:`Store.checkpoint` calls it.
        """

    def read_again(self, key: Key) -> bytes:
        """Read after the previous bytes did not parse; a backend able to repair does so first."""
        return self.read(key)

    def quarantine(self, key: Key, data: bytes) -> str | None:
        """Move the corrupt document ``data`` of ``key`` aside, keeping its bytes.

        Only while the stored bytes still equal ``data`` (checked under the key's
        lock); afterwards the key reads as missing. Returns where the bytes went,
        or None when the document changed meanwhile and nothing was moved.
        """
        raise UnsupportedOperationError(f"{type(self).__name__} has no quarantine")

    def begin(self) -> contextlib.AbstractContextManager[BackendTransaction]:
        """Start a transaction (backends declaring ``transactions`` only).

        It excludes every other writer until the block ends, like SQLite's
        ``BEGIN IMMEDIATE``, so its reads and its commit see one state.
        """
        raise UnsupportedOperationError(f"{type(self).__name__} has no transactions")

    def lock(self, key: Key) -> contextlib.AbstractContextManager[None]:
        """Exclude every other :meth:`lock` holder of ``key`` (re-entrant per thread).

        :meth:`Store.update` holds it across read, function and write. Backends
        whose lock only covers one process declare ``cross_process=False``.
        """
        raise UnsupportedOperationError(f"{type(self).__name__} has no lock")

    def recover(self) -> Sequence[Key]:
        """Repair what a crash interrupted; returns the keys repaired.

        The store calls it once, right after the factory created the backend and
        before any other call, so documents are consistent from the first read.
        """
        return ()

    def location_of(self, key: Key) -> str:
        """Where the document lives, for error messages (a path or a URI)."""
        return "/".join(key)

    @property
    def namespace(self) -> str:
        """Backends with equal namespaces see the same documents (e.g. one directory)."""
        return f"{type(self).__qualname__}@{id(self):x}"

    def close(self) -> None:  # noqa: B027  # closing is optional for backends holding nothing
        """Release resources; called once by the store."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


BackendFactory = Callable[..., Backend]


@dataclass(frozen=True)
class BackendSpec:
    """How a plugin registers a backend, returned from ``storage_shim_backends``.

    ``factory(location, **options)`` returns a :class:`Backend`; it receives only
    the options its signature accepts. ``capabilities`` defaults to the
    factory's own when the factory is a :class:`Backend` subclass. ``schemes``
    are the URI schemes the backend serves: ``open_store("postgresql://...")``
    without ``backend=`` picks the backend declaring ``postgresql``.
    """

    name: str
    factory: BackendFactory
    description: str = ""
    capabilities: Capabilities | None = field(default=None)
    schemes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise ValueError(f"backend name {self.name!r} must be an identifier (dashes allowed)")
        for scheme in self.schemes:
            if not _SCHEME.fullmatch(scheme):
                raise ValueError(
                    f"{scheme!r} is not a URI scheme (RFC 3986: letter, then a-z 0-9 + - .)"
                )
        object.__setattr__(self, "schemes", tuple(s.lower() for s in self.schemes))
        if self.capabilities is None:
            declared = getattr(self.factory, "capabilities", None)
            if isinstance(declared, Capabilities):
                object.__setattr__(self, "capabilities", declared)


def accepted_options(factory: BackendFactory, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``factory`` accepts (all of them with ``**kwargs``)."""
    import inspect  # noqa: PLC0415  # only when a store opens: import storage_shim stays quick

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return dict(options)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(options)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in options.items() if k in names}
