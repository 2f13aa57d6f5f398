"""JSON through orjson, refusing what would not read back equal.

orjson silently writes NaN and Infinity as ``null``, and would write dates and
dataclasses as strings and objects that read back as something else. Every such
value raises :class:`~storage_shim.SerializationError` naming its JSONPath, and
nothing is written.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterator
from typing import Any

import orjson

from .errors import SerializationError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_NULL = b"null"
MAX_DEPTH = 254
"""orjson's own nesting limit."""


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


def encode(value: object) -> bytes:
    """Serialise ``value`` to compact UTF-8 JSON bytes."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        path, reason = find_problem(value) or ("$", str(exc))
        raise SerializationError(path, reason) from exc
    # NaN and Infinity come out as null, so only output holding a null may hide one; reading it
    # back (C speed) finds it, and only a difference (NaN, or a tuple now a list) needs the walk.
    if _NULL in data and orjson.loads(data) != value:
        problem = find_problem(value)
        if problem:
            raise SerializationError(*problem)
    return data


def decode(data: bytes) -> Any:
    """Parse JSON bytes as Python's ``json`` does, at orjson's speed; a ``ValueError`` if not JSON.

    A few documents that Python's ``json.dump`` writes and ``json.load`` reads
    back, orjson refuses: NaN and Infinity, lone surrogates, a BOM, UTF-16.
    Those are read by the standard library, so a file another program wrote
    that way is a document, not a corrupt one.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        if not python_may_read(data):
            raise
        try:
            return json.loads(data)
        except RecursionError as exc:
            raise ValueError("nested too deeply") from exc


_ONLY_PYTHON_READS = (b"NaN", b"Infinity", b"\\ud", b"\\uD")
"""What Python's json writes and reads back but orjson refuses: constants and lone surrogates."""


def python_may_read(data: bytes) -> bool:
    """Whether the standard library may read UTF-8 (or BOM-marked) bytes that orjson refused."""
    head = data[:4]
    return (
        head.startswith(codecs.BOM_UTF8)
        or b"\x00" in head
        or any(marker in data for marker in _ONLY_PYTHON_READS)
    )


def describe_invalid(data: bytes, error: Exception) -> str:
    """A short human reason for bytes that did not parse."""
    if not data:
        return "empty file (0 bytes)"
    if not data.strip(b"\x00"):
        return f"file of {len(data)} NUL bytes"
    return f"invalid JSON ({error}) in {len(data)} bytes"


def _child_path(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _walk(value: object) -> Iterator[tuple[str, object, int]]:
    """Every value with its JSONPath and depth, depth-first in document order."""
    stack: list[tuple[str, object, int]] = [("$", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        yield path, item, depth
        if depth > MAX_DEPTH:
            continue  # a reference cycle would never end
        if isinstance(item, dict):
            children = [(_child_path(path, k), v) for k, v in item.items()]
        elif isinstance(item, list | tuple):
            children = [(_child_path(path, i), v) for i, v in enumerate(item)]
        else:
            continue
        stack.extend((p, v, depth + 1) for p, v in reversed(children))


def find_problem(value: object) -> tuple[str, str] | None:
    """Return ``(json_path, reason)`` of the first value that would not round-trip."""
    for path, item, depth in _walk(value):
        reason = _problem_of(item, depth)
        if reason:
            return path, reason
        if isinstance(item, dict):
            for k in item:
                if not isinstance(k, str):
                    return _child_path(path, k), f"dict key {k!r} is not a str"
    return None


def _problem_of(item: object, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"nested more than {MAX_DEPTH} levels deep (a reference cycle?)"
    if isinstance(item, str):
        return None if _encodable(item) else "string is not valid Unicode (a lone surrogate?)"
    if item is not None and type(item) not in _EXACT:
        return None if _orjson_accepts(item) else f"{type(item).__name__} is not a JSON type"
    if isinstance(item, float) and not math.isfinite(item):
        return f"{item!r} has no JSON representation"
    if isinstance(item, int) and not _INT_MIN <= item <= _INT_MAX:
        return "integer outside the 64-bit range"
    return None


_EXACT = frozenset({bool, int, float, dict, list, tuple})


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _orjson_accepts(leaf: object) -> bool:
    """orjson writes some types natively (UUID, enums); only its own verdict is consistent."""
    try:
        orjson.dumps(leaf, default=_refuse, option=_OPTIONS)
    except TypeError:
        return False
    return True
