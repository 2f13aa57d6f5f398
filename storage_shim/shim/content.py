"""What may be published: JSON that parses, and whole lines."""

from __future__ import annotations

import codecs
import json

import orjson

_ONLY_PYTHON_READS = (b"NaN", b"Infinity", b"\\ud", b"\\uD")
"""What Python's json writes and reads back but orjson refuses: constants and lone surrogates."""


def parses_as_json(data: bytes, encoding: str | None = None) -> bool:
    """Whether ``json.load`` reads ``data`` back (decoded with ``encoding``, a text handle's).

    orjson first (fast); the standard library (ten times slower) only for
    what orjson refuses and Python reads: ``NaN``, ``Infinity``, lone
    surrogates, a BOM, UTF-16 and other encodings. A document half written
    (the usual refusal) costs one orjson pass.
    """
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        return True
    if not _python_may_read(data, encoding):
        return False
    try:
        json.loads(data if encoding is None else data.decode(encoding))
    except (ValueError, RecursionError):
        return False
    return True


def _python_may_read(data: bytes, encoding: str | None) -> bool:
    if encoding is not None and codecs.lookup(encoding).name != "utf-8":
        return True
    head = data[:4]
    return (
        head.startswith(codecs.BOM_UTF8)
        or b"\x00" in head
        or any(marker in data for marker in _ONLY_PYTHON_READS)
    )


def whole_lines_end(data: bytes) -> int:
    """The length of the prefix of ``data`` made of complete lines."""
    return data.rfind(b"\n") + 1
