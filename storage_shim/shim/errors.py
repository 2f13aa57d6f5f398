"""The shim's own errors; both are :class:`~storage_shim.StorageError` subclasses."""

from __future__ import annotations

import errno

from ..errors import StorageError, StorageIOError


class ShimInstallError(StorageError, ValueError):
    """The shim cannot be installed as asked (overlapping roots, an unsuitable backend)."""


class InvalidContentError(StorageIOError):
    """A handle was closed holding content that is not JSON: nothing was published.

    The file keeps its previous version. An ``OSError`` (``EINVAL``), so code
    that already handles a failed save (a full disk) handles this one too;
    ``data`` holds the refused bytes.
    """

    def __init__(self, path: str, data: bytes, reason: str) -> None:
        super().__init__(
            errno.EINVAL,
            f"not published: the content ({len(data)} bytes) is not {reason}; the file keeps"
            " its previous version",
            path,
        )
        self.data = data
        self.reason = reason
