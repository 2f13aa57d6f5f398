"""What may be published: JSON that parses, and whole lines."""

from __future__ import annotations

import json

import orjson

from ..codec import python_may_read


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
    if not python_may_read(data, encoding):
        return False
    try:
        json.loads(data if encoding is None else data.decode(encoding))
    except (ValueError, RecursionError):
        return False
    return True


def whole_lines_end(data: bytes) -> int:
    """The length of the prefix of ``data`` made of complete lines."""
    return data.rfind(b"\n") + 1
