"""Type aliases shared by every layer."""

from __future__ import annotations

from collections.abc import Sequence

Key = tuple[str, ...]
"""A validated key: the path segments of a document, without the ``.json`` suffix."""

KeyLike = str | Sequence[str]
"""What the public API accepts as a key: segments, or one string split on ``/``."""
