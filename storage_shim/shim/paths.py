"""Which opens the shim takes: absolute normalised paths under a root, and modes it understands."""

from __future__ import annotations

import os
from dataclasses import dataclass

_POSIX = os.sep == "/" and os.altsep is None
_MODE_CHARS = frozenset("rwxa+tb")


def absolute(file: object) -> str | None:
    """``file`` as an absolute, normalised ``str`` path; None for a descriptor or a non-path.

    A POSIX path without ``.``, ``..`` or doubled separators takes no
    normalisation: as it is when absolute, after the working directory otherwise.
    """
    if isinstance(file, str):
        path = file
    elif isinstance(file, int):
        return None
    else:
        try:
            raw = os.fspath(file)  # type: ignore[call-overload]  # any object: refused below
        except TypeError:
            return None
        path = os.fsdecode(raw)
    try:
        if _POSIX and path and path[0] != "." and "/." not in path and "//" not in path:
            if path[0] == "/":
                return path
            cwd = os.getcwd()
            return f"{cwd}/{path}" if cwd != "/" else f"/{path}"
        return os.path.normcase(os.path.abspath(path))
    except (OSError, ValueError):  # the working directory is gone; a NUL in the path
        return None


def leads_through_link(path: str, expected: str) -> bool:
    """Whether resolving ``path`` leaves its plain spelling ``expected``: a link on the way."""
    return os.path.normcase(os.path.realpath(path)) != expected


@dataclass(frozen=True)
class Mode:
    """A valid ``open()`` mode, taken apart."""

    text: str
    kind: str
    """``r``, ``w``, ``x`` or ``a``."""
    plus: bool
    binary: bool

    @property
    def readable(self) -> bool:
        return self.kind == "r" or self.plus

    @property
    def writable(self) -> bool:
        return self.kind != "r" or self.plus

    @property
    def raw(self) -> str:
        """The mode for the ``FileIO`` over the private file."""
        return self.kind + ("+" if self.plus else "")


def parse_mode(mode: object) -> Mode | None:
    """None for anything ``open()`` itself would refuse: the original open then raises."""
    if not isinstance(mode, str):
        return None
    chars = set(mode)
    kinds = chars & set("rwxa")
    if (
        len(chars) != len(mode)
        or not chars <= _MODE_CHARS
        or len(kinds) != 1
        or {"t", "b"} <= chars
    ):
        return None
    return Mode(mode, kinds.pop(), "+" in chars, "b" in chars)
