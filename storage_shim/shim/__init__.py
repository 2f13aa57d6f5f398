"""The FUSE-free shim: unmodified code that stores JSON with ``open()`` gets the store's guarantees.

>>> import storage_shim.shim
>>> with storage_shim.shim.patched(root, backend="journal"):   # doctest: +SKIP
...     with open(f"{root}/settings.json", "w") as f:
...         json.dump(settings, f)

``docs/shim.md`` has the commit points, what is published when, and the limits.
"""

from __future__ import annotations

from .errors import InvalidContentError, ShimInstallError
from .install import ShimHandle, install, installed_roots, patched

__all__ = [
    "InvalidContentError",
    "ShimHandle",
    "ShimInstallError",
    "install",
    "installed_roots",
    "patched",
]
