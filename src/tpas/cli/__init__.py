"""The ``tpas`` command line, for people debugging their ThingPark setup.

One parser with subcommands; each command group lives in its own module and registers
its parsers with ``register(commands)``, each command a small ``run(args) -> int``:

* ``tpas token check`` / ``tpas token sign-downlink`` (:mod:`tpas.cli.token`)
* ``tpas decode`` (:mod:`tpas.cli.decode`)
* ``tpas serve`` / ``tpas init`` (:mod:`tpas.cli.server`)
* ``tpas downlink send|list|show|cancel`` (:mod:`tpas.cli.downlink`)
* ``tpas simulate`` (:mod:`tpas.cli.simulate`) and ``tpas demo`` (:mod:`tpas.cli.demo`)

Exit codes: 0 success; 1 a negative answer (a token that does not verify); 2 a usage or
input error (argparse's convention), told in one line on stderr, ``tpas: <problem>``,
never as a traceback. This is the edge where :class:`~tpas.errors.TpasError` becomes a
message. Keys never appear in any output: argparse's own error messages, which repeat
command-line values, are redacted before they are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import tpas
from tpas.cli import decode, demo, downlink, server, simulate, token
from tpas.cli.inputs import KEY_OPTION, MASK
from tpas.errors import TpasError

__all__ = ["main"]

# A 32-hex-digit run looks like a key: masked in every error message, whatever its origin.
_KEY_LIKE = re.compile(r"[0-9A-Fa-f]{32,}")


class _UsageError(Exception):
    """argparse refused the command line; raised instead of exiting, so it can be redacted."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are raised, not printed, and that does not
    expand abbreviated options (so every ``--key`` value is known before parsing)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``tpas`` parser; subparsers inherit its class."""
    parser = _Parser(
        prog="tpas",
        description="tpas, an application server for Actility ThingPark.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {tpas.__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    demo.register(commands)
    server.register(commands)
    downlink.register(commands)
    simulate.register(commands)
    token.register(commands)
    decode.register(commands)
    return parser


def _secrets(argv: Sequence[str]) -> list[str]:
    """Every value given to ``--key``, wherever it appears on the command line."""
    found = []
    for index, arg in enumerate(argv):
        if arg == KEY_OPTION and index + 1 < len(argv):
            found.append(argv[index + 1])
        elif arg.startswith(f"{KEY_OPTION}="):
            found.append(arg.partition("=")[2])
    return [s for s in (s.strip() for s in found) if s]


def _redact(message: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        pattern = rf"(?<![0-9A-Za-z]){re.escape(secret)}(?![0-9A-Za-z])"
        message = re.sub(pattern, MASK, message)
    return _KEY_LIKE.sub(MASK, message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tpas`` with ``argv`` (default: the process arguments); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    secrets = _secrets(args_list)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
        code: int = args.run(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except _UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {_redact(exc.message, secrets)}", file=sys.stderr)
        return 2
    except TpasError as exc:
        print(f"tpas: {_redact(str(exc), secrets)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`tpas decode f | head`): silence the flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code
