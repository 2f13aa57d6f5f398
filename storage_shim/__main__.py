"""``python -m storage_shim``: the ``storage-shim`` command."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
