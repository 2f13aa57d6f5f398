"""``storage-shim run --root DIR [--backend NAME] -- COMMAND ...``: a program under the shim."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from typing import Any

from ..backend import DURABILITY_LEVELS
from ..errors import StorageError
from .environment import child_environment
from .install import install

PROG = "storage-shim run"


def add_run_command(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run a Python program with the shim installed, without changing its code",
        description="Run COMMAND with the FUSE-free shim installed in it and in every Python"
        " process it starts: its open()/pathlib writes of JSON files below each root are"
        " published through the store, never torn. The exit status is COMMAND's. Programs"
        " started with -I, -E or -S, and non-Python programs, are not covered (docs/shim.md).",
    )
    run.add_argument(
        "--root",
        dest="roots",
        action="append",
        required=True,
        metavar="DIR",
        help="a directory whose files go through the shim; repeat for several",
    )
    run.add_argument(
        "--backend",
        default="atomic",
        metavar="NAME",
        help="the backend that publishes documents (default: atomic; see 'storage-shim backends')",
    )
    run.add_argument(
        "--durability",
        choices=DURABILITY_LEVELS,
        default="fsync",
        help="none, fsync (the default) or full",
    )
    run.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="the program and its arguments, after '--': -- python app.py",
    )
    run.set_defaults(run=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(f"{PROG}: error: no COMMAND given (storage-shim run --root DIR -- python app.py)")
        return 2
    for root in args.roots:  # refuse a wrong backend or root here, not in each child
        try:
            install(root, args.backend, durability=args.durability).uninstall()
        except (StorageError, OSError, ValueError) as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
    env = child_environment(args.roots, args.backend, args.durability, os.environ)
    try:
        child = subprocess.Popen(command, env=env)  # noqa: S603  # the user's own command
    except OSError as exc:
        print(f"{PROG}: error: cannot run {command[0]!r}: {exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    while True:
        try:
            status = child.wait()
        except KeyboardInterrupt:  # the child got the signal too; its exit is what counts
            continue
        break
    if status < 0:  # killed by a signal: the shell's convention
        return 128 + -status if -status in signal.valid_signals() else 1
    return status
