"""Which database file a location names: a path, or a ``sqlite:///absolute/path`` URI."""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request

SCHEME = "sqlite"
DEFAULT_FILE_NAME = "storage.sqlite3"
"""The database's name inside a directory location."""

_URI = re.compile(rf"{SCHEME}://", re.IGNORECASE)


def database_path(location: str | os.PathLike[str]) -> str:
    """The absolute path of the database file.

    A URI is ``sqlite:///absolute/path`` (``file:`` style: an empty host, or
    ``localhost``). A location that is a directory, or does not exist and has
    no suffix (``data/store``), holds the database as ``storage.sqlite3``;
    any other location (``data/store.db``) is the database file itself.
    """
    path = os.fspath(location)
    if _URI.match(path):
        path = _path_of_uri(path)
    path = os.path.abspath(path)
    if os.path.isdir(path) or (not os.path.exists(path) and not os.path.splitext(path)[1]):
        return os.path.join(path, DEFAULT_FILE_NAME)
    return path


def _path_of_uri(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(
            f"{uri!r} names host {parts.netloc!r}; a sqlite URI names a local file:"
            " sqlite:///absolute/path (three slashes), or pass a plain path"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{uri!r}: sqlite URIs take no query or fragment")
    path = urllib.request.url2pathname(parts.path)
    if not parts.path or not os.path.isabs(path):
        raise ValueError(f"{uri!r} names no absolute path: use sqlite:///absolute/path")
    return path
