"""``storage-shim migrate``: copy every document from one store to another, and prove it.

Documents are copied as their exact bytes (a file written by ``json.dump``
with indentation arrives as it was), in batches that are transactions where
the destination has them. A document already equal in the destination is
skipped, so a migration interrupted at any point is finished by running it
again. At the end every source document is read again on both sides and
compared by SHA-256.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import codec
from ._types import Key
from .backend import Backend
from .errors import NotFoundError, StorageIOError, UnsupportedOperationError
from .keys import format_key
from .locations import redact, uri_scheme
from .progress import Progress
from .store import Store, open_store

BATCH_DOCUMENTS = 256
BATCH_BYTES = 8 << 20


@dataclass
class Migration:
    """What :func:`migrate` did; ``ok`` when every source document verified in the destination."""

    source: str
    destination: str
    documents: int = 0
    copied: int = 0
    unchanged: int = 0
    corrupt: list[str] = field(default_factory=list)
    """Source documents that are not JSON: not copied (``storage-shim doctor`` them first)."""
    mismatched: list[str] = field(default_factory=list)
    """Documents that differ after the copy (changed in the source meanwhile: run it again)."""
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    """Documents in the destination that the source does not have (kept; not an error)."""

    @property
    def ok(self) -> bool:
        return not (self.corrupt or self.mismatched or self.missing)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "documents": self.documents,
            "copied": self.copied,
            "unchanged": self.unchanged,
            "verified": self.documents - len(self.corrupt + self.mismatched + self.missing),
            "corrupt": self.corrupt,
            "mismatched": self.mismatched,
            "missing": self.missing,
            "extra": self.extra,
            "ok": self.ok,
        }


def _quiet(what: str, fraction: float) -> None:
    """The default progress: none."""


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def migrate(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    from_backend: str | None = None,
    to_backend: str | None = None,
    from_options: Mapping[str, Any] | None = None,
    to_options: Mapping[str, Any] | None = None,
    progress: Progress = _quiet,
    **options: Any,
) -> Migration:
    """Copy every document of ``source`` to ``destination``, then verify them all.

    Backends default to the location's URI scheme, else ``atomic``. ``options``
    go to both stores (``durability``, ``plugins``...), ``from_options`` and
    ``to_options`` to one (``schema="app"`` for a PostgreSQL destination).
    """
    if uri_scheme(source) is None and not os.path.isdir(source):
        raise StorageIOError(errno.ENOENT, "no store to migrate from", os.fspath(source))
    with (
        open_store(source, from_backend, **{**options, **(from_options or {})}) as src,
        open_store(destination, to_backend, **{**options, **(to_options or {})}) as dst,
    ):
        reader, writer = _only_backend(src), _only_backend(dst)
        if reader.namespace == writer.namespace:
            raise ValueError("the source and the destination are the same store")
        result = Migration(
            f"{redact(source)} ({src.default_backend})",
            f"{redact(destination)} ({dst.default_backend})",
        )
        keys = src.list()
        result.documents = len(keys)
        # Errors surface as the store's typed errors (StorageIOError for a full disk...).
        with dst._errors(f"migrate {src.default_backend} to {dst.default_backend}", None):
            _copy(keys, reader, writer, result, progress)
            _verify(keys, reader, writer, result, progress)
            result.extra = [format_key(k) for k in sorted(set(dst.list()) - set(keys))]
    return result


def _only_backend(store: Store) -> Backend:
    if len(store.targets) != 1:
        raise UnsupportedOperationError(
            f"{store!r} routes keys to several backends ({', '.join(sorted(store.targets))});"
            " migrate one backend at a time"
        )
    return store.backend(store.default_backend)


def _copy(
    keys: list[Key], reader: Backend, writer: Backend, result: Migration, progress: Progress
) -> None:
    batch: dict[Key, bytes] = {}
    size = 0
    for done, key in enumerate(keys, 1):
        progress(f"copying {len(keys):,} documents", done / max(len(keys), 1))
        try:
            data = reader.read(key)
        except NotFoundError:
            result.missing.append(format_key(key))  # removed from the source meanwhile
            continue
        try:
            codec.decode(data)
        except ValueError:
            result.corrupt.append(format_key(key))
            continue
        try:
            if _digest(writer.read(key)) == _digest(data):
                result.unchanged += 1
                continue
        except NotFoundError:
            pass
        batch[key] = data
        size += len(data)
        if len(batch) >= BATCH_DOCUMENTS or size >= BATCH_BYTES:
            _write(writer, batch, result)
            batch, size = {}, 0
    _write(writer, batch, result)


def _write(writer: Backend, batch: dict[Key, bytes], result: Migration) -> None:
    """One transaction per batch where the destination has them, else one write each."""
    if not batch:
        return
    if writer.capabilities.transactions:
        with writer.begin() as transaction:
            transaction.commit(dict(batch))
    else:
        for key, data in batch.items():
            writer.write(key, data)
    result.copied += len(batch)


def _verify(
    keys: Iterable[Key], reader: Backend, writer: Backend, result: Migration, progress: Progress
) -> None:
    skip = set(result.corrupt) | set(result.missing)
    wanted = [key for key in keys if format_key(key) not in skip]
    for done, key in enumerate(wanted, 1):
        progress(f"verifying {len(wanted):,} documents", done / max(len(wanted), 1))
        try:
            copied = writer.read(key)
        except NotFoundError:
            result.missing.append(format_key(key))
            continue
        try:
            original = reader.read(key)
        except NotFoundError:
            result.missing.append(format_key(key))
            continue
        if _digest(copied) != _digest(original):
            result.mismatched.append(format_key(key))
