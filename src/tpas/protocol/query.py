"""Query strings as ThingPark sends them: parsed without turning ``+`` into a space."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

__all__ = ["Query", "Signed", "parse_query", "read_signed"]


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


Signed = tuple[str, str, str, str, str, str]
"""LrnDevEui, LrnFPort, AS_ID, Time, Token (decoded) and the canonical query string."""

# The query exactly as ThingPark lays it out (SPEC.md §3.1): the five signed parameters in
# hashing order, then Token, each once, nothing else.
_THINGPARK_ORDER: Final = re.compile(
    r"\??LrnDevEui=([^&]*)&LrnFPort=([^&]*)&LrnInfos=([^&]*)&AS_ID=([^&]*)"
    r"&Time=([^&]*)&Token=([^&]*)"
)


def read_signed(raw: str) -> Signed | None:
    """The signed parameters of a query laid out as ThingPark sends it, or ``None``.

    A shortcut for the usual query, with the same values :func:`parse_query` gives: the
    six parameters in ThingPark's order, each once, nothing else, and no escape other than
    the ``%3A`` and ``%2B`` of Time. Anything else gives ``None``: use :func:`parse_query`.
    """
    match = _THINGPARK_ORDER.fullmatch(raw)
    if match is None:
        return None
    dev_eui, fport, infos, as_id, time, token = match.groups()
    if "%" in time:
        time = time.replace("%3A", ":").replace("%2B", "+")
    if "%" in time or "%" in dev_eui or "%" in fport or "%" in infos or "%" in as_id:
        return None
    if "%" in token:
        return None
    canonical = f"LrnDevEui={dev_eui}&LrnFPort={fport}&LrnInfos={infos}&AS_ID={as_id}&Time={time}"
    return dev_eui, fport, as_id, time, token, canonical
