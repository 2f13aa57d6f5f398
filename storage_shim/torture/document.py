"""The self-validating document the torture rewrites, and the verdict on one read of it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..errors import CorruptDocumentError

GOOD = "good"
TORN = "torn"

_FIELDS = frozenset({"version", "sha256", "body"})
_OVERHEAD = len('{"version":,"sha256":"","body":""}') + 64 + 10


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()


def make_document(version: int, size: int) -> dict[str, Any]:
    """About ``size`` bytes of JSON: the version, a body, and the SHA-256 of the body.

    The body repeats a pattern drawn from the version, so two versions differ at
    every offset and any mix of them fails the hash.
    """
    pattern = hashlib.sha256(f"storage-shim torture {version}".encode()).hexdigest()
    length = max(size - _OVERHEAD, len(pattern))
    body = (pattern * (length // len(pattern) + 1))[:length]
    return {"version": version, "sha256": _digest(body), "body": body}


def intact_version(document: Any) -> int | None:
    """The version of an intact :func:`make_document`; None for anything else."""
    if not isinstance(document, dict) or set(document) != _FIELDS:
        return None
    version, body = document["version"], document["body"]
    if type(version) is not int or not isinstance(body, str):
        return None
    return version if document["sha256"] == _digest(body) else None


def classify_read(read: Callable[[], Any]) -> tuple[str, int | None]:
    """Call ``read`` and judge what it returned: ``(GOOD, version)``, ``(TORN, None)``,
    or ``(name of the exception's type, None)`` for any other failure.

    A read the library refuses as corrupt JSON is torn, and so is valid JSON that
    is not one whole version (a mix of two, or a cut that happens to parse).
    """
    try:
        document = read()
    except CorruptDocumentError:
        return TORN, None
    except Exception as exc:  # every other failure is counted by its type
        return type(exc).__name__, None
    version = intact_version(document)
    return (TORN, None) if version is None else (GOOD, version)
