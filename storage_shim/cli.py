"""The ``storage-shim`` command: inspect backends, and list, read, write and remove documents."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import __version__
from .backend import DURABILITY_LEVELS, BackendSpec, Capabilities
from .errors import NotFoundError, StorageError
from .keys import format_key, parse_key, parse_prefix
from .store import Store, backend_specs, open_store

PROG = "storage-shim"
DEFAULT_BACKEND = "atomic"

GUARANTEES: tuple[tuple[str, str, Callable[[Capabilities], bool]], ...] = (
    ("torn_reads_possible", "torn reads possible?", lambda c: not c.atomic_reads),
    ("crash_leaves_old_or_new", "crash leaves old-or-new?", lambda c: c.crash_safe),
    ("acknowledged_write_durable", "acknowledged write durable?", lambda c: c.durable),
    # A backend whose documents live in one process has no other process to lose updates to.
    (
        "lost_updates_possible",
        "lost updates possible?",
        lambda c: c.persistent and not c.cross_process,
    ),
)
"""Each question a user asks of a backend, answered from its declared capabilities."""


def guarantees(spec: BackendSpec) -> dict[str, bool | None]:
    """The answers for ``spec``; ``None`` when the backend declares no capabilities."""
    caps = spec.capabilities
    return {field: None if caps is None else answer(caps) for field, _, answer in GUARANTEES}


def _emit(text: str) -> None:
    """Write UTF-8 whatever the console's encoding, so any document can be printed."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    buffer.write(text.encode("utf-8"))
    buffer.flush()


def _yes_no(answer: bool | None) -> str:
    return "?" if answer is None else ("yes" if answer else "no")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def cmd_backends(args: argparse.Namespace) -> int:
    specs = backend_specs()
    if args.json:
        listing = [
            {
                "name": spec.name,
                "description": spec.description,
                "capabilities": None
                if spec.capabilities is None
                else {
                    name: getattr(spec.capabilities, name)
                    for name in Capabilities.__dataclass_fields__
                },
                "guarantees": guarantees(spec),
            }
            for spec in specs.values()
        ]
        _emit(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    rows = [["backend", *(header for _, header, _ in GUARANTEES), "description"]]
    rows += [
        [spec.name, *map(_yes_no, guarantees(spec).values()), spec.description]
        for spec in specs.values()
    ]
    _emit(_table(rows))
    return 0


def _open(args: argparse.Namespace, **options: Any) -> Store:
    """Open an existing store: reading commands must not create a directory by mistake."""
    if not os.path.isdir(args.location):
        raise StorageError(f"no store at {args.location!r}: not a directory")
    return open_store(args.location, backend=args.backend, **options)


def cmd_ls(args: argparse.Namespace) -> int:
    prefix = parse_prefix(args.prefix)
    with _open(args) as store:
        keys = store.list(prefix)
    _emit("".join(format_key(key) + "\n" for key in keys))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    key = parse_key(args.key)
    with _open(args) as store:
        value = store.read(key)
    option = 0 if args.compact else orjson.OPT_INDENT_2
    _emit(orjson.dumps(value, option=option).decode() + "\n")
    return 0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_stdin_json() -> Any:
    """The JSON document on standard input, parsed exactly: big integers stay integers."""
    stream = sys.stdin
    data: bytes | str = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
    if not data.strip():
        raise StorageError("standard input is empty; expected a JSON document")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise StorageError(f"standard input is not valid JSON: {exc}") from None


def cmd_put(args: argparse.Namespace) -> int:
    key = parse_key(args.key)
    value = read_stdin_json()
    with open_store(args.location, backend=args.backend, durability=args.durability) as store:
        receipt = store.write(key, value)
    line = {
        "key": format_key(receipt.key),
        "backend": receipt.backend,
        "bytes": receipt.bytes,
        "durability": receipt.durability,
        "file_synced": receipt.file_synced,
        "dir_synced": receipt.dir_synced,
        "durable": receipt.durable,
        "retries": receipt.retries,
    }
    _emit(orjson.dumps(line).decode() + "\n")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    key = parse_key(args.key)
    with _open(args) as store:
        existed = store.remove(key)
    if not existed and not args.force:
        raise NotFoundError(key)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="JSON documents on plain files that never tear, never vanish, "
        "never lose an update.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backends = commands.add_parser(
        "backends", help="list the registered backends and what each guarantees"
    )
    backends.add_argument("--json", action="store_true", help="print JSON instead of a table")
    backends.set_defaults(run=cmd_backends)

    def data_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("location", metavar="LOCATION", help="the store's directory")
        sub.add_argument(
            "--backend",
            default=DEFAULT_BACKEND,
            metavar="NAME",
            help=f"the backend to use (default: {DEFAULT_BACKEND}; see '{PROG} backends')",
        )
        return sub

    ls = data_command("ls", "list the keys below PREFIX (default: all), one per line")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="a key prefix: a/b")
    ls.set_defaults(run=cmd_ls)

    get = data_command("get", "print the document stored under KEY")
    get.add_argument("key", metavar="KEY", help="segments separated by '/': session/ses_1")
    get.add_argument("--compact", action="store_true", help="print on one line")
    get.set_defaults(run=cmd_get)

    put = data_command("put", "store the JSON document read from standard input under KEY")
    put.add_argument("key", metavar="KEY", help="segments separated by '/': session/ses_1")
    put.add_argument(
        "--durability",
        choices=DURABILITY_LEVELS,
        default="fsync",
        help="none, fsync (file and directory; the default) or full (F_FULLFSYNC on macOS)",
    )
    put.set_defaults(run=cmd_put)

    rm = data_command("rm", "remove the document stored under KEY")
    rm.add_argument("key", metavar="KEY", help="segments separated by '/': session/ses_1")
    rm.add_argument("-f", "--force", action="store_true", help="succeed when there is no document")
    rm.set_defaults(run=cmd_rm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 success, 1 storage error, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage or the help
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        status: int = args.run(args)
    except StorageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return status
