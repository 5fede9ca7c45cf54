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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from tpas.errors import InputError
from tpas.protocol.document import RawDocument
from tpas.protocol.keys import AsKey
from tpas.protocol.models import parse_time
from tpas.protocol.query import parse_query

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
    "compute_token",
    "verify_report",
]

SIGNED_PARAMETERS: Final = ("LrnDevEui", "LrnFPort", "LrnInfos", "AS_ID", "Time")
"""The query parameters covered by the token, in hashing order (SPEC.md §3.1)."""


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


def _text(value: Any) -> str:
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
    parts = []
    for element in recipe.elements:
        value = fields.get(element.name)
        text = element.absent if value is None else _text(value)
        parts.append(text.lower() if element.lower else text)
    return "".join(parts)


def canonical_query(values: Mapping[str, str]) -> str:
    """``LrnDevEui=..&LrnFPort=..&LrnInfos=..&AS_ID=..&Time=..`` from decoded values."""
    return "&".join(f"{name}={values.get(name, '')}" for name in SIGNED_PARAMETERS)


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


@dataclass(frozen=True, slots=True)
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


def _int(text: Any) -> int | None:
    try:
        return int(_text(text))
    except ValueError:
        return None


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
    values = query.values
    for name in (*SIGNED_PARAMETERS, "Token"):
        if name not in values:
            return Verdict(False, Reason.MISSING_PARAMETER, f"query parameter {name} is absent")
        if name in query.repeated:
            return Verdict(False, Reason.REPEATED_PARAMETER, f"query parameter {name} repeats")
    if as_id is not None and values["AS_ID"].lower() != as_id.lower():
        return Verdict(False, Reason.BAD_AS_ID, "AS_ID is not this application's")
    sent = parse_time(values["Time"])
    if sent is None:
        return Verdict(False, Reason.MALFORMED_TIME, "Time is not an ISO-8601 time")
    if now is not None and max_drift is not None:
        drift = (now - sent).total_seconds()
        if drift > max_drift:
            return Verdict(False, Reason.STALE_TIME, f"Time is {drift:.1f} s old", query_time=sent)
        if drift < -max_drift:
            return Verdict(
                False, Reason.FUTURE_TIME, f"Time is {-drift:.1f} s ahead", query_time=sent
            )
    fields = doc.fields
    dev_eui = fields.get("DevEUI")
    if dev_eui is not None and values["LrnDevEui"].lower() != _text(dev_eui).lower():
        return Verdict(
            False,
            Reason.BODY_QUERY_MISMATCH,
            "LrnDevEui differs from the body DevEUI",
            query_time=sent,
        )
    fport = fields.get("FPort")
    if fport is not None and _int(values["LrnFPort"]) != _int(fport):
        return Verdict(
            False,
            Reason.BODY_QUERY_MISMATCH,
            "LrnFPort differs from the body FPort",
            query_time=sent,
        )
    recipe = recipes.get(doc.root)
    elements = body_elements(recipe, fields) if recipe else ""
    query_string = canonical_query(values)
    received = values["Token"].lower().encode()
    for index, key in enumerate(keys):
        secret = key.reveal()
        variants = (secret, secret.lower()) if secret != secret.lower() else (secret,)
        for lowered, variant in enumerate(variants):
            expected = compute_token(elements, query_string, variant).encode()
            if hmac.compare_digest(expected, received):
                return Verdict(
                    True,
                    None,
                    "token matches",
                    index,
                    bool(lowered),
                    elements,
                    query_string,
                    sent,
                )
    return Verdict(
        False,
        Reason.TOKEN_MISMATCH,
        "no key reproduces the token",
        None,
        False,
        elements,
        query_string,
        sent,
    )
