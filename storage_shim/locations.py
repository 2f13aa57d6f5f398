"""Telling a URI (``postgresql://...``) from a path, and showing either without its password."""

from __future__ import annotations

import os
import re
import urllib.parse

_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+)://")
"""Two characters at least: ``C://data`` is a Windows drive, not a URI."""
_SECRET_KEYWORD = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)")
"""``password=...`` or ``sslpassword=...`` in a query or a libpq keyword string."""
_HIDDEN = "***"


def uri_scheme(location: str | os.PathLike[str]) -> str | None:
    """The lower-cased scheme of a ``scheme://`` location; None for a path."""
    if not isinstance(location, str):
        return None
    match = _URI.match(location)
    return match["scheme"].lower() if match else None


def redact(location: str | os.PathLike[str]) -> str:
    """The location as text with every password (user part, query, keyword) as ``***``."""
    text = _SECRET_KEYWORD.sub(lambda m: m[1] + _HIDDEN, os.fspath(location))
    scheme = uri_scheme(text)
    if scheme is None:
        return text
    try:
        parts = urllib.parse.urlsplit(text)
        password = parts.password
    except ValueError:  # not a well-formed URI: show none of what follows the scheme
        return f"{scheme}://{_HIDDEN}"
    if password is None or password == _HIDDEN:
        return text
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.netloc.rpartition("@")[2]
    rest = text[len(parts.scheme) + 3 + len(parts.netloc) :]
    return f"{parts.scheme}://{user}:{_HIDDEN}@{host}{rest}"
