"""Keys: validation (the store's security boundary) and the mapping to relative paths.

A key is a sequence of segments; ``("session_diff", "ses_1")`` is stored as
``session_diff/ses_1.json`` below the store's location. The rules make every
valid key a plain, portable, relative file name on Linux, macOS and Windows:
a key can never name a parent directory, an absolute path, a device, or one of
the library's own files (which all start with a dot).
"""

from __future__ import annotations

import functools
import os
import re

from ._types import Key, KeyLike
from .errors import InvalidKeyError

SUFFIX = ".json"
MAX_SEGMENT_BYTES = 200
"""Leaves room below the usual 255-byte name limit for ``.json`` and temp-file decorations."""
MAX_SEGMENTS = 32

_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"]
    + [
        f"{stem}{n}"
        for stem in ("COM", "LPT")
        for n in [*"123456789", "\u00b9", "\u00b2", "\u00b3"]
    ]
)


def _segment_problem(segment: object) -> str | None:  # noqa: PLR0911  # one rule, one return
    if not isinstance(segment, str):
        return f"segment {segment!r} is not a string"
    if not segment:
        return "empty segment"
    if segment in {".", ".."}:
        return f"segment {segment!r} names a directory"
    if segment[0] == ".":
        return f"segment {segment!r} starts with '.', which is reserved for the library's own files"
    bad = _FORBIDDEN.search(segment)
    if bad:
        return f"segment {segment!r} contains the forbidden character {bad.group()!r}"
    if segment[-1] in ". ":
        return f"segment {segment!r} ends with a dot or a space"
    if segment.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
        return f"segment {segment!r} is a Windows device name"
    try:
        size = len(segment.encode("utf-8"))
    except UnicodeEncodeError:
        return f"segment {segment!r} is not valid Unicode"
    if size > MAX_SEGMENT_BYTES:
        return f"segment is {size} bytes long; the limit is {MAX_SEGMENT_BYTES}"
    return None


@functools.lru_cache(maxsize=8192)
def _validate(segments: tuple[object, ...], original: object) -> Key:
    if not segments:
        raise InvalidKeyError(original, "empty key")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidKeyError(original, f"more than {MAX_SEGMENTS} segments")
    for segment in segments:
        problem = _segment_problem(segment)
        if problem:
            raise InvalidKeyError(original, problem)
    for segment in segments[:-1]:
        if not is_directory_segment(segment):  # type: ignore[arg-type]  # checked: a str
            raise InvalidKeyError(
                original, f"segment {segment!r} ends with {SUFFIX}: it would clash with a document"
            )
    return segments  # type: ignore[return-value]  # every segment was checked to be a str


def parse_key(key: KeyLike) -> Key:
    """Validate ``key`` and return it as a tuple of segments.

    A ``str`` is split on ``/``; any other sequence must hold strings.
    Raises :class:`~storage_shim.InvalidKeyError` for anything else.
    """
    if isinstance(key, str):
        segments: tuple[object, ...] = tuple(key.split("/"))
    elif isinstance(key, list | tuple):
        segments = tuple(key)
    else:
        raise InvalidKeyError(key, "a key is a str or a sequence of str")
    try:
        return _validate(segments, key if isinstance(key, str) else segments)
    except TypeError:  # an unhashable segment: not a str, so invalid
        raise InvalidKeyError(key, "every segment must be a str") from None


def parse_prefix(prefix: KeyLike) -> Key:
    """Like :func:`parse_key`, but the empty prefix (the whole store) is allowed."""
    if prefix in ("", ()) or (isinstance(prefix, list) and not prefix):
        return ()
    return parse_key(prefix)


_PLAIN = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,198}[A-Za-z0-9_-])?")
"""Names valid at a glance (ASCII, no dot first or last), unless they start like a device."""
_DEVICE_STARTS = frozenset(name[:3] for name in _WINDOWS_DEVICES)


def is_valid_segment(segment: str) -> bool:
    if _PLAIN.fullmatch(segment) and segment[:3].upper() not in _DEVICE_STARTS:
        return True
    return _segment_problem(segment) is None


def is_directory_segment(segment: str) -> bool:
    """Only the last segment may end with ``.json``: ``("a.json", "b")`` would need a
    directory named like the file of the key ``("a",)``."""
    return not segment.lower().endswith(SUFFIX)


def relative_path(key: Key) -> str:
    """``("a", "b")`` -> ``a/b.json`` with the platform's separator."""
    return os.path.join(*key[:-1], key[-1] + SUFFIX)


def format_key(key: Key) -> str:
    return "/".join(key)
