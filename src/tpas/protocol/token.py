"""The report token: body-element recipes and verification (SPEC.md §3).

``Token = lowercase_hex(SHA-256(bodyElements + queryParameters + AsKey))`` where

* ``bodyElements`` concatenates, without separator, body values chosen per report type
  (the recipe table :data:`DEFAULT_RECIPES`), exactly as received;
* ``queryParameters`` is ``LrnDevEui=..&LrnFPort=..&LrnInfos=..&AS_ID=..&Time=..``
  rebuilt in that order from the percent-decoded values, whatever order they came in.

Recipes for notification, multicast summary, downlink rejected and the alarms are not
published (SPEC.md §9.3); tpas assumes ``CustomerID + DevEUI`` for them, and any recipe can
be replaced per report type with :meth:`Recipe.parse` (``"CustomerID+lower(DevEUI)"``).

:func:`verify_report` is pure: the keys and ``now`` are arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from tpas.errors import InputError
from tpas.protocol.document import RawDocument
from tpas.protocol.keys import AsKey
from tpas.protocol.models import parse_time
from tpas.protocol.query import Query, parse_query

__all__ = [
    "DEFAULT_RECIPES",
    "SIGNED_PARAMETERS",
    "BodyElement",
    "Reason",
    "Recipe",
    "RecipeError",
    "Verdict",
    "body_elements",
    "canonical_query",
    "check_body",
    "check_query",
    "compute_token",
    "element_text",
    "find_key",
    "same_device",
    "same_port",
    "verify_report",
]

SIGNED_PARAMETERS: Final = ("LrnDevEui", "LrnFPort", "LrnInfos", "AS_ID", "Time")
"""The query parameters covered by the token, in hashing order (SPEC.md §3.1)."""
_REQUIRED: Final = (*SIGNED_PARAMETERS, "Token")


class RecipeError(InputError):
    """A recipe text that cannot be read."""

    reason = "invalid_recipe"


@dataclass(frozen=True, slots=True)
class BodyElement:
    """One body value in a recipe: ``name``, optionally lower-cased, with a stand-in text
    for when the field is absent."""

    name: str
    lower: bool = False
    absent: str = ""

    def __str__(self) -> str:
        text = f"lower({self.name})" if self.lower else self.name
        return f"{text}|{self.absent}" if self.absent else text


@dataclass(frozen=True, slots=True)
class Recipe:
    """The ordered body elements of one report type's token."""

    elements: tuple[BodyElement, ...]

    @classmethod
    def parse(cls, text: str) -> Recipe:
        """Read ``"CustomerID + lower(DevEUI) + FPort|0"``: fields joined by ``+``;
        ``lower(X)`` lower-cases a value; ``X|text`` stands in ``text`` when X is absent."""
        elements = []
        for raw_part in text.split("+"):
            part = raw_part.strip()
            name, _, absent = part.partition("|")
            name = name.strip()
            lower = name.startswith("lower(") and name.endswith(")")
            if lower:
                name = name[6:-1].strip()
            if not name or not all(c.isalnum() or c in "_-" for c in name):
                raise RecipeError(f"cannot read recipe element {part!r} in {text!r}")
            elements.append(BodyElement(name, lower, absent.strip()))
        return cls(tuple(elements))

    def __str__(self) -> str:
        return " + ".join(map(str, self.elements))


DEFAULT_RECIPES: Final[Mapping[str, Recipe]] = {
    # Published (SPEC.md §3.2). An uplink without FPort hashes FPort as 0.
    "DevEUI_uplink": Recipe.parse("CustomerID + DevEUI + FPort|0 + FCntUp + payload_hex"),
    "DevEUI_location": Recipe.parse("CustomerID + lower(DevEUI)"),
    "DevEUI_downlink_Sent": Recipe.parse("CustomerID + DevEUI + FPort + FCntDn"),
    # Unpublished (SPEC.md §9.3): an assumption, overridable per report type.
    "DevEUI_notification": Recipe.parse("CustomerID + DevEUI"),
    "DevEUI_multicast_summary": Recipe.parse("CustomerID + DevEUI"),
    "DevEUI_downlink_Rejected": Recipe.parse("CustomerID + DevEUI"),
    "DevEUI_alarm": Recipe.parse("CustomerID + DevEUI"),
    "BS_alarm": Recipe.parse("CustomerID + DevEUI"),
}
"""The recipe per report root. ``DevEUI_downlink`` is a request, not a report: no token."""


def element_text(value: Any) -> str:
    """A received value as the text that was hashed: strings as they are, JSON numbers in
    decimal (``2``, not ``2.0``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return ""


def body_elements(recipe: Recipe, fields: Mapping[str, Any]) -> str:
    """Concatenate the recipe's values from the raw document fields."""
    return _elements(recipe, fields.get)


def canonical_query(values: Mapping[str, str]) -> str:
    """``LrnDevEui=..&LrnFPort=..&LrnInfos=..&AS_ID=..&Time=..`` from decoded values."""
    get = values.get
    return (
        f"LrnDevEui={get('LrnDevEui', '')}&LrnFPort={get('LrnFPort', '')}"
        f"&LrnInfos={get('LrnInfos', '')}&AS_ID={get('AS_ID', '')}&Time={get('Time', '')}"
    )


def compute_token(body: str, query: str, key: str) -> str:
    """SHA-256 over ``body + query + key`` as UTF-8, in lower-case hex."""
    return hashlib.sha256((body + query + key).encode()).hexdigest()


class Reason(StrEnum):
    """Why a report was refused. Stable codes, used in HTTP answers and metrics."""

    MISSING_PARAMETER = "missing_parameter"
    REPEATED_PARAMETER = "repeated_parameter"
    BAD_AS_ID = "bad_as_id"
    MALFORMED_TIME = "malformed_time"
    STALE_TIME = "stale_time"
    FUTURE_TIME = "future_time"
    BODY_QUERY_MISMATCH = "body_query_mismatch"
    TOKEN_MISMATCH = "token_mismatch"  # noqa: S105 - a reason code, not a secret


# Not frozen: a frozen dataclass pays object.__setattr__ per field, on every request.
@dataclass(slots=True)
class Verdict:
    """The outcome of a verification, with what was hashed (never the key)."""

    ok: bool
    reason: Reason | None = None
    detail: str = ""
    key_index: int | None = None
    """Index of the matching key in the list given."""
    key_lowercased: bool = False
    """True when the key matched only once lower-cased."""
    body_elements: str = ""
    query_string: str = ""
    query_time: datetime | None = None
    """The query ``Time``, parsed: the network server's clock at emission."""


def _int(value: Any) -> int | None:
    """A decimal integer as sent (ASCII digits only), else ``None``."""
    text = element_text(value)
    return int(text) if text.isascii() and text.isdigit() else None


def same_device(lrn_dev_eui: str, dev_eui: Any) -> bool:
    """LrnDevEui names the body's DevEUI (in either case); true when the body has none."""
    if dev_eui is None:
        return True
    text = dev_eui if type(dev_eui) is str else element_text(dev_eui)
    return lrn_dev_eui == text or lrn_dev_eui.lower() == text.lower()


def same_port(lrn_fport: str, fport: Any) -> bool:
    """LrnFPort is the body's FPort as a decimal number; true when the body has none."""
    if fport is None:
        return True
    text = fport if type(fport) is str else element_text(fport)
    return lrn_fport == text or _int(lrn_fport) == _int(text)


def check_query(
    query: Query,
    *,
    as_id: str | None = None,
    now: datetime | None = None,
    max_drift: float | None = None,
) -> tuple[Verdict | None, datetime | None]:
    """The body-independent checks: parameters, AS_ID, Time and its freshness.

    Returns a refusal (or ``None`` when the query passes) and the parsed query Time.
    """
    values = query.values
    for name in _REQUIRED:
        if name not in values:
            return Verdict(
                False, Reason.MISSING_PARAMETER, f"query parameter {name} is absent"
            ), None
    if query.repeated:
        for name in _REQUIRED:
            if name in query.repeated:
                return Verdict(
                    False, Reason.REPEATED_PARAMETER, f"query parameter {name} repeats"
                ), None
    if as_id is not None and values["AS_ID"].lower() != as_id.lower():
        return Verdict(False, Reason.BAD_AS_ID, "AS_ID is not this application's"), None
    sent = parse_time(values["Time"])
    if sent is None:
        return Verdict(False, Reason.MALFORMED_TIME, "Time is not an ISO-8601 time"), None
    if now is not None and max_drift is not None:
        drift = (now - sent).total_seconds()
        if drift > max_drift:
            return Verdict(
                False, Reason.STALE_TIME, f"Time is {drift:.1f} s old", query_time=sent
            ), sent
        if drift < -max_drift:
            return Verdict(
                False, Reason.FUTURE_TIME, f"Time is {-drift:.1f} s ahead", query_time=sent
            ), sent
    return None, sent


def check_body(
    query: Query,
    sent: datetime | None,
    dev_eui: Any,
    fport: Any,
    elements: str,
    keys: Sequence[AsKey],
) -> Verdict:
    """The body checks, after :func:`check_query` passed: the body's ``dev_eui`` and
    ``fport`` against LrnDevEui and LrnFPort, then the token over ``elements`` (the
    recipe's body elements) against each key, as configured and then lower-cased."""
    values = query.values
    if not same_device(values["LrnDevEui"], dev_eui):
        return Verdict(
            False, Reason.BODY_QUERY_MISMATCH, "LrnDevEui differs from the body DevEUI",
            query_time=sent,
        )  # fmt: skip
    if not same_port(values["LrnFPort"], fport):
        return Verdict(
            False, Reason.BODY_QUERY_MISMATCH, "LrnFPort differs from the body FPort",
            query_time=sent,
        )  # fmt: skip
    query_string = canonical_query(values)
    found = find_key(elements, query_string, values["Token"].lower(), keys)
    if found is not None:
        return Verdict(
            True, None, "token matches", found[0], found[1], elements, query_string, sent
        )  # fmt: skip
    return Verdict(
        False, Reason.TOKEN_MISMATCH, "no key reproduces the token", None, False,
        elements, query_string, sent,
    )  # fmt: skip


_sha256: Final = hashlib.sha256
_same: Final = hmac.compare_digest


def find_key(
    elements: str, query_string: str, received: str, keys: Sequence[AsKey]
) -> tuple[int, bool] | None:
    """The key that reproduces ``received`` (a lower-case token) over ``elements`` and
    ``query_string``: its index, and whether only its lower-cased form does; else ``None``.

    Each candidate is compared in constant time (:func:`hmac.compare_digest`).
    """
    if received.isascii():
        hashed = (elements + query_string).encode()
        for index, key in enumerate(keys):
            for lowered, secret in enumerate(key.variants):
                # Both ASCII text: compared as their bytes, in constant time.
                if _same(_sha256(hashed + secret).hexdigest(), received):
                    return index, bool(lowered)
    return None


def _elements(recipe: Recipe, get: Callable[[str], Any]) -> str:
    parts = []
    for element in recipe.elements:
        value = get(element.name)
        if value is None:
            text = element.absent
        elif type(value) is str:  # most values: spare the call
            text = value
        else:
            text = element_text(value)
        parts.append(text.lower() if element.lower else text)
    return "".join(parts)


def verify_report(
    doc: RawDocument,
    raw_query: str,
    keys: Sequence[AsKey],
    *,
    as_id: str | None = None,
    now: datetime | None = None,
    max_drift: float | None = None,
    recipes: Mapping[str, Recipe] = DEFAULT_RECIPES,
) -> Verdict:
    """Check a report's query and token (SPEC.md §3.3); nothing here reads a clock.

    ``as_id`` (compared case-insensitively) is checked when given; the query Time must be
    within ``max_drift`` seconds of ``now`` when both are given. Checks run in this order:
    parameters present and single, AS_ID, Time, LrnDevEui/LrnFPort against the body,
    token against each key as configured and then lower-cased.
    """
    query = parse_query(raw_query)
    refusal, sent = check_query(query, as_id=as_id, now=now, max_drift=max_drift)
    if refusal is not None:
        return refusal
    fields = doc.fields
    recipe = recipes.get(doc.root)
    elements = body_elements(recipe, fields) if recipe else ""
    return check_body(query, sent, fields.get("DevEUI"), fields.get("FPort"), elements, keys)
