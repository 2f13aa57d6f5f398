"""The error a torture run raises when it cannot run or finish."""

from __future__ import annotations

from ..errors import StorageError


class TortureError(StorageError):
    """The torture could not run: a bad location, a backend it cannot drive, a dead worker."""
