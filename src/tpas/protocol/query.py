"""Query strings as ThingPark sends them: parsed without turning ``+`` into a space."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Query", "parse_query"]


@dataclass(frozen=True, slots=True)
class Query:
    """Decoded query parameters; ``repeated`` names those that appeared more than once."""

    values: dict[str, str]
    repeated: frozenset[str]


def parse_query(raw: str) -> Query:
    """Split on ``&`` then on the first ``=``, percent-decoding with ``+`` kept as ``+``.

    ``urllib.parse.parse_qs`` would turn the ``+`` of a Time offset into a space and break
    the token (SPEC.md §3.1); ``unquote`` leaves it alone, and ``%2B`` becomes ``+`` too.
    """
    values: dict[str, str] = {}
    repeated: set[str] = set()
    for part in raw.removeprefix("?").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = unquote(name) if "%" in name else name
        if name in values:
            repeated.add(name)
        values[name] = unquote(value) if "%" in value else value
    return Query(values, frozenset(repeated))
