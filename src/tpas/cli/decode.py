"""``tpas decode``: read a report in any format, print it normalised or converted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from tpas.cli.inputs import read_body
from tpas.protocol import BodyFormat, decode, encode

__all__ = ["register", "run"]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``decode``."""
    p = commands.add_parser(
        "decode",
        help="read a report, print it as normalised JSON or convert it",
        description="Read a report (typed or untyped JSON, or XML), check it against tpas's "
        "model, and print it: pretty typed JSON by default, or converted with --to.",
    )
    p.add_argument("file", metavar="FILE", help="the report body; - for stdin")
    p.add_argument(
        "--from", dest="source", choices=("json", "xml"), help="input format (default: sniffed)"
    )
    p.add_argument(
        "--to",
        dest="target",
        choices=[f.value for f in BodyFormat],
        help="output format (default: pretty typed JSON)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``tpas decode``: exit 0 with the document on stdout."""
    model = decode(read_body(args.file), BodyFormat(args.source) if args.source else None)
    if args.target is None:
        out = msgspec.json.format(encode(model, BodyFormat.JSON), indent=2)
    else:
        out = encode(model, BodyFormat(args.target))
    sys.stdout.buffer.write(out + b"\n")
    sys.stdout.buffer.flush()
    return 0
