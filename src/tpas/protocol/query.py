"""Query strings as ThingPark sends them: parsed without turning ``+`` into a space."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Query", "parse_query"]


_NONE: frozenset[str] = frozenset()


@dataclass(slots=True)
class Query:
    """Decoded query parameters; ``repeated`` names those that appeared more than once."""

    values: dict[str, str]
    repeated: frozenset[str]


def _unquote(value: str) -> str:
    # ThingPark encodes only the ':' and '+' of Time: replace those directly, and leave
    # anything else to unquote (same result: ':' and '+' are not hex digits, so the
    # replacement cannot form a new escape).
    value = value.replace("%3A", ":").replace("%2B", "+")
    return unquote(value) if "%" in value else value


def parse_query(raw: str) -> Query:
    """Split on ``&`` then on the first ``=``, percent-decoding with ``+`` kept as ``+``.

    ``urllib.parse.parse_qs`` would turn the ``+`` of a Time offset into a space and break
    the token (SPEC.md §3.1); ``unquote`` leaves it alone, and ``%2B`` becomes ``+`` too.
    """
    values: dict[str, str] = {}
    repeated: set[str] | None = None
    for part in raw.removeprefix("?").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in name:
            name = unquote(name)
        if name in values:
            repeated = repeated or set()
            repeated.add(name)
        values[name] = _unquote(value) if "%" in value else value
    return Query(values, frozenset(repeated) if repeated else _NONE)
