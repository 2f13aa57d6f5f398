"""The ``storage-shim`` command: inspect backends, list, read, write and remove documents,
and torture the backends with racing processes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import __version__, doctor, migrate
from .backend import DURABILITY_LEVELS, BackendSpec, Capabilities
from .bench.cli import add_bench_command
from .errors import NotFoundError, StorageError
from .keys import format_key, parse_key, parse_prefix
from .locations import redact, uri_scheme
from .progress import progress_bar
from .shim.cli import add_run_command
from .store import Store, backend_specs, open_store
from .torture import (
    DEFAULT_READERS,
    DEFAULT_SECONDS,
    DEFAULT_SIZE,
    DEFAULT_UPDATERS,
    DEFAULT_UPDATES,
    run_torture,
)
from .torture import report as torture_report

PROG = "storage-shim"

LOCATION_HELP = "a directory, or a URI such as postgresql://host/db"
BACKEND_HELP = "the backend (default: the one serving the URI's scheme, else atomic)"

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
    ("transactions", "transactions?", lambda c: c.transactions),
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
                "schemes": list(spec.schemes),
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
    if uri_scheme(args.location) is None and not os.path.isdir(args.location):
        raise StorageError(f"no store at {args.location!r}: not a directory")
    return open_store(args.location, backend=args.backend, **args.options, **options)


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
    with open_store(
        args.location, backend=args.backend, durability=args.durability, **args.options
    ) as store:
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


def cmd_torture(args: argparse.Namespace) -> int:
    settings = torture_report.Settings(
        seconds=args.seconds,
        readers=args.readers,
        size=args.size,
        updaters=args.updaters,
        updates=args.updates,
        durability=args.durability,
    )
    try:
        with progress_bar(args.progress) as progress:
            results = run_torture(
                args.backends,
                seconds=args.seconds,
                readers=args.readers,
                size=args.size,
                location=args.location,
                updaters=args.updaters,
                updates=args.updates,
                durability=args.durability,
                progress=progress,
            )
    except KeyboardInterrupt:
        print(f"{PROG}: torture interrupted", file=sys.stderr)
        return 130
    if args.json:
        report = torture_report.as_json(results, settings)
        _emit(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _emit(
            _table(torture_report.rows(results)) + "\n" + torture_report.legend(results, settings)
        )
    broken = [(r.backend, problem) for r in results for problem in r.problems]
    for backend, problem in broken:
        print(f"{PROG}: torture: {backend}: {problem}", file=sys.stderr)
    return 1 if broken else 0


def cmd_init(args: argparse.Namespace) -> int:
    with open_store(args.location, backend=args.backend, **args.options) as store:
        name = store.default_backend
    print(f"{redact(args.location)}: ready ({name})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    check = doctor.repair if args.repair else doctor.diagnose
    with progress_bar(args.progress) as progress:
        diagnosis = check(args.location, args.backend, progress=progress, **args.options)
    if args.json:
        _emit(orjson.dumps(diagnosis.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _emit(doctor_report(diagnosis))
    return 1 if diagnosis.problems else 0


def doctor_report(diagnosis: doctor.Diagnosis) -> str:
    lines = [f"{diagnosis.location}: {diagnosis.documents:,} documents"]
    lines += [f"  repaired: {what}" for what in diagnosis.repairs]
    for finding in diagnosis.findings:
        mark = "PROBLEM" if finding.problem else "ok"
        lines.append(f"  {mark:<7} {finding.kind}: {finding.path}: {finding.detail}")
    problems = len(diagnosis.problems)
    if problems:
        hint = "" if diagnosis.repairs else f"; '{PROG} doctor --repair' fixes what it can"
        lines.append(f"{problems} problem{'s' * (problems != 1)} found{hint}")
    else:
        lines.append("no problems found")
    return "\n".join(lines) + "\n"


def add_doctor_command(commands: Any) -> None:
    text = (
        "check every document and the library's own files for what crashes left behind"
        " (corrupt documents, temporary files, interrupted rewrites, the journal); exits 1"
        " when it finds a problem. Run it while the application is stopped."
    )
    sub = commands.add_parser("doctor", help=text.split(";", maxsplit=1)[0], description=text)
    sub.add_argument("location", metavar="LOCATION", help=LOCATION_HELP)
    sub.add_argument(
        "--backend",
        metavar="NAME",
        help="for a store that keeps no files (a directory is examined whatever wrote it)",
    )
    sub.add_argument(
        "--repair",
        action="store_true",
        help="recover interrupted writes and the journal, delete leftover temporary files and"
        " move corrupt documents to <location>/.storage_shim/quarantine/ (never deleted)",
    )
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    _options_option(sub)
    _progress_option(sub)
    sub.set_defaults(run=cmd_doctor)


def cmd_migrate(args: argparse.Namespace) -> int:
    with progress_bar(args.progress) as progress:
        result = migrate.migrate(
            args.source,
            args.destination,
            from_backend=args.from_backend,
            to_backend=args.to_backend,
            from_options=args.from_options,
            to_options=args.to_options,
            progress=progress,
            **args.options,
        )
    if args.json:
        _emit(orjson.dumps(result.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _emit(migration_report(result))
    return 0 if result.ok else 1


def migration_report(result: migrate.Migration) -> str:
    lines = [
        f"{result.source} -> {result.destination}",
        f"  {result.documents:,} documents: {result.copied:,} copied,"
        f" {result.unchanged:,} already there",
    ]
    for label, keys, advice in (
        ("corrupt in the source, not copied", result.corrupt, f"run '{PROG} doctor' on it"),
        ("changed while copying", result.mismatched, "run the migration again"),
        ("missing after the copy", result.missing, "run the migration again"),
        ("in DEST only, kept", result.extra, "not in SOURCE"),
    ):
        if keys:
            shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
            lines.append(f"  {len(keys):,} {label} ({advice}): {shown}")
    if result.ok:
        verified = result.documents
        lines.append(f"  verified: all {verified:,} documents arrived, SHA-256 for SHA-256")
    return "\n".join(lines) + "\n"


def add_migrate_command(commands: Any) -> None:
    text = (
        "copy every document from SOURCE to DEST (any two backends: a directory to"
        " postgresql://... for instance), then check that each one arrived, by SHA-256;"
        " safe to run again after an interruption"
    )
    sub = commands.add_parser("migrate", help=text.split(",", maxsplit=1)[0], description=text)
    sub.add_argument("source", metavar="SOURCE", help=LOCATION_HELP)
    sub.add_argument("destination", metavar="DEST", help=LOCATION_HELP)
    sub.add_argument("--from-backend", metavar="NAME", help=BACKEND_HELP)
    sub.add_argument("--to-backend", metavar="NAME", help=BACKEND_HELP)
    sub.add_argument("--json", action="store_true", help="print the result as JSON")
    _options_option(sub)
    _options_option(sub, "--from-option", "from_options", "SOURCE's")
    _options_option(sub, "--to-option", "to_options", "DEST's")
    _progress_option(sub)
    sub.set_defaults(run=cmd_migrate)


def _option(text: str) -> tuple[str, Any]:
    name, equals, value = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


class _Options(argparse.Action):
    def __call__(
        self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None
    ) -> None:
        setattr(namespace, self.dest, {**getattr(namespace, self.dest), value[0]: value[1]})


def _options_option(
    sub: argparse.ArgumentParser, flag: str = "--option", dest: str = "options", whose: str = "a"
) -> None:
    flags = ("-o", flag) if flag == "--option" else (flag,)
    sub.add_argument(
        *flags,
        dest=dest,
        action=_Options,
        type=_option,
        default={},
        metavar="NAME=VALUE",
        help=f"{whose} backend option, such as lock_timeout=5 or schema=app (VALUE is JSON"
        " when it parses, else text); repeatable",
    )


def _progress_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw a progress bar on standard error (default: when it is a terminal)",
    )


_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kKmM]?)B?")


def _bytes(text: str) -> int:
    """A size in bytes: ``1500000``, ``300k`` or ``1.5MB`` (powers of 1000)."""
    match = _SIZE.fullmatch(text.strip())
    size = (
        0
        if match is None
        else float(match["number"]) * {"": 1, "k": 1e3, "m": 1e6}[match["unit"].lower()]
    )
    if size < 1:
        raise argparse.ArgumentTypeError(
            f"not a size in bytes: {text!r} (e.g. 1500000, 300k, 1.5MB)"
        )
    return int(size)


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {number}")
        return number

    return parse


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return seconds


def add_torture_command(commands: Any) -> None:
    torture = commands.add_parser(
        "torture",
        help="race processes on each backend and count torn reads and lost updates",
        description="Race processes on each backend: one writer rewriting a self-validating"
        " document against readers, then updaters on one counter. Prints the reads, torn reads,"
        " errors, throughput and lost updates of each; the exit status is 1 when a backend broke"
        " a promise it declares (see 'storage-shim backends').",
    )
    torture.add_argument(
        "--backend",
        dest="backends",
        action="append",
        metavar="NAME",
        help="a backend to torture; repeat for several (default: every installed one that"
        " keeps its documents in files)",
    )
    torture.add_argument(
        "--seconds",
        type=_seconds,
        default=DEFAULT_SECONDS,
        metavar="S",
        help="how long the writer rewrites the document, per backend"
        f" (default: {DEFAULT_SECONDS:g})",
    )
    torture.add_argument(
        "--readers",
        type=_at_least(1),
        default=DEFAULT_READERS,
        metavar="N",
        help=f"reader processes (default: {DEFAULT_READERS})",
    )
    torture.add_argument(
        "--size",
        type=_bytes,
        default=DEFAULT_SIZE,
        metavar="BYTES",
        help=f"the document's size: 1500000, 300k, 1.5MB (default: {DEFAULT_SIZE})",
    )
    torture.add_argument(
        "--updaters",
        type=_at_least(0),
        default=DEFAULT_UPDATERS,
        metavar="N",
        help=f"processes update()-ing one counter; 0 skips that race (default: {DEFAULT_UPDATERS})",
    )
    torture.add_argument(
        "--updates",
        type=_at_least(1),
        default=DEFAULT_UPDATES,
        metavar="K",
        help=f"update() calls per updater (default: {DEFAULT_UPDATES})",
    )
    torture.add_argument(
        "--location",
        metavar="DIR",
        help="run in a new temporary directory inside DIR (your NFS mount, your SSD), removed"
        " afterwards (default: the system's temporary directory)",
    )
    torture.add_argument(
        "--durability",
        choices=DURABILITY_LEVELS,
        default="none",
        help="the writers' durability (default: none, to rewrite as often as possible)",
    )
    torture.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _progress_option(torture)
    torture.set_defaults(run=cmd_torture)


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
        sub.add_argument("location", metavar="LOCATION", help=LOCATION_HELP)
        sub.add_argument("--backend", metavar="NAME", help=BACKEND_HELP)
        _options_option(sub)
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

    init = data_command(
        "init",
        "create what the store needs (its directory, a database schema) and exit; for"
        " deployments that forbid creating them at run time",
    )
    init.set_defaults(run=cmd_init)

    add_doctor_command(commands)
    add_migrate_command(commands)
    add_run_command(commands)
    add_torture_command(commands)
    add_bench_command(commands)
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
