"""Telling a URI (``postgresql://...``) from a path, and showing either without its password."""

from __future__ import annotations

import os
import re
import urllib.parse

_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(location: str | os.PathLike[str]) -> str | None:
    """The lower-cased scheme of a ``scheme://`` location; None for a path (``C:\\x`` included)."""
    if not isinstance(location, str):
        return None
    match = _URI.match(location)
    return match["scheme"].lower() if match else None


def redact(location: str | os.PathLike[str]) -> str:
    """The location as text, with a URI's password (in the user part or the query) as ``***``."""
    text = os.fspath(location)
    if uri_scheme(text) is None:
        return text
    original = parts = urllib.parse.urlsplit(text)
    if parts.password is not None:
        user = urllib.parse.quote(parts.username or "", safe="")
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() == "password" for name, _ in query):
        hidden = [(n, "***" if n.lower() == "password" else v) for n, v in query]
        parts = parts._replace(query=urllib.parse.urlencode(hidden, safe="*"))
    return text if parts == original else urllib.parse.urlunsplit(parts)
