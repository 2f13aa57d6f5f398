"""What may be published: JSON that parses, and whole lines."""

from __future__ import annotations

import codecs
import json

from .. import codec


def parses_as_json(data: bytes, encoding: str | None = None) -> bool:
    """Whether ``json.load`` reads ``data`` back (decoded with ``encoding``, a text handle's).

    UTF-8 goes through the store's own reading (orjson, the standard library
    only for what orjson refuses and Python reads), so the shim publishes
    exactly what the store will read; another encoding is decoded first.
    """
    try:
        if encoding is None or codecs.lookup(encoding).name == "utf-8":
            codec.decode(data)
        else:
            json.loads(data.decode(encoding))
    except (ValueError, RecursionError):
        return False
    return True


def whole_lines_end(data: bytes) -> int:
    """The length of the prefix of ``data`` made of complete lines."""
    return data.rfind(b"\n") + 1
