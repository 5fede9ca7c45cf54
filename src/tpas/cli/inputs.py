"""What the command line reads: body files (or stdin) and AS keys, never echoing a key."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from tpas.errors import InputError
from tpas.protocol import AsKey, InvalidKeyError

__all__ = ["KEY_OPTION", "MASK", "add_key_option", "load_keys", "read_body"]

MASK: Final = "*" * 32
"""Stands in for a key wherever the text that was hashed is shown."""

KEY_OPTION: Final = "--key"


def add_key_option(parser: argparse.ArgumentParser, *, repeat: bool) -> None:
    """Add ``--key``. Taken as plain text (not converted by argparse, whose error
    messages repeat the bad value) and checked by :func:`load_keys`."""
    parser.add_argument(
        KEY_OPTION,
        required=True,
        action="append" if repeat else "store",
        metavar="KEY",
        help="the AS key (TIAK), 32 hex digits; never printed"
        + ("; repeat to try several keys" if repeat else ""),
    )


def load_keys(values: Sequence[str]) -> list[AsKey]:
    """Wrap each ``--key`` value; a bad one is named by its position, never its value."""
    keys = []
    for number, value in enumerate(values, 1):
        try:
            keys.append(AsKey(value.strip()))
        except InvalidKeyError as exc:
            label = KEY_OPTION if len(values) == 1 else f"{KEY_OPTION} #{number}"
            raise InvalidKeyError(f"{label}: {exc}") from exc
    return keys


def read_body(path: str) -> bytes:
    """The bytes of a file, or of stdin for ``-``."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
