"""What ``storage-shim bench`` does once its options are parsed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import orjson

from ..progress import progress_bar
from . import report as output
from .runner import QUICK, Settings, run_bench
from .subjects import Options

EXIT_INTERRUPTED = 130


def settings_of(args: argparse.Namespace) -> Settings:
    """The run ``storage-shim bench`` options ask for."""
    changes: dict[str, Any] = {
        "only": tuple(args.only),
        "location": args.location,
        "options": Options(postgres=args.postgres),
    }
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.seconds:
        changes["seconds"] = args.seconds
    if args.documents:
        changes["documents"] = (
            max(args.documents // 100, 1),
            max(args.documents // 10, 2),
            args.documents,
        )
    if args.recovery_mb:
        changes["recovery_mb"] = (args.recovery_mb / 16, args.recovery_mb / 4, args.recovery_mb)
    return dataclasses.replace(QUICK if args.quick else Settings(), **changes)


def run(args: argparse.Namespace) -> int:
    if args.location is not None and not os.path.isdir(args.location):
        print(f"storage-shim: bench: no directory at {args.location!r}", file=sys.stderr)
        return 2
    settings = settings_of(args)
    try:
        with progress_bar(args.progress) as progress:
            report = run_bench(settings, progress)
    except KeyboardInterrupt:
        print("storage-shim: bench interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json == "-":
        sys.stdout.buffer.write(
            orjson.dumps(output.as_json(report), option=orjson.OPT_INDENT_2) + b"\n"
        )
    else:
        sys.stdout.write(output.as_text(report))
        if args.json:
            with open(args.json, "wb") as file:
                file.write(orjson.dumps(output.as_json(report), option=orjson.OPT_INDENT_2) + b"\n")
    markdown = output.as_markdown(report)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as file:
            file.write(markdown)
    if args.update_doc:
        with open(args.update_doc, encoding="utf-8") as file:
            text = file.read()
        with open(args.update_doc, "w", encoding="utf-8") as file:
            file.write(output.update_document(text, markdown))
    return 0
