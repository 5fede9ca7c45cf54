"""Verify and decode a report in one step, fast for the common case (the ingest path).

Most reports are ordinary typed or untyped JSON, or ordinary XML, under a query laid out
as ThingPark sends it. For those, :func:`check_report` takes a shortcut that can only
accept: the query is read by :func:`~tpas.protocol.query.read_signed`; a JSON body decodes
straight into its model (one msgspec pass, C speed, the root key picked by a look at the
first key) and the token is computed from the model's values; an XML body is read by
:func:`~tpas.protocol.xml_codec.read_usual` and converted by
:func:`~tpas.protocol.document.convert_usual`. Whenever the shortcut cannot accept (an
unusual query or body, any refusal), the report takes the general path, unchanged:
ordinary JSON still decoded in one pass; anything else through
:func:`~tpas.protocol.codec.parse` to a raw document, :func:`verify_report` over the raw
values, :func:`to_model` keeping unknown fields in ``extra``. A token that does not match
the model's values is checked again over the raw values (they can differ in spelling,
``"02"`` against ``2``), so the verdict is always the exact one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import msgspec

from tpas.protocol.codec import parse
from tpas.protocol.document import BodyFormat, convert_usual, to_model
from tpas.protocol.keys import AsKey
from tpas.protocol.models import OBJECT_OR_TEXT, REPORT_TYPES, Document, parse_time
from tpas.protocol.query import parse_query, read_signed
from tpas.protocol.token import (
    DEFAULT_RECIPES,
    Reason,
    Recipe,
    Verdict,
    body_elements,
    check_body,
    check_query,
    element_text,
    find_key,
    same_device,
    same_port,
)
from tpas.protocol.xml_codec import read_usual

__all__ = ["Checked", "check_report"]


@dataclass(slots=True)
class Checked:
    """A verified (or refused) report: the verdict, the root, and, when accepted, the model
    and the query's Token (lower case)."""

    verdict: Verdict
    root: str
    model: Document | None
    token: str = ""


_envelope: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_decoders: Final = {
    root: msgspec.json.Decoder(cls, strict=False) for root, cls in REPORT_TYPES.items()
}
# Wire name -> attribute name, per root, for reading signed fields off a model.
_attributes: Final = {
    root: {f.encode_name: f.name for f in msgspec.structs.fields(cls)}
    for root, cls in REPORT_TYPES.items()
}
# Fields the tolerant path would re-read from JSON text into an object.
_object_fields: Final = {
    root: tuple(
        a for w, a in _attributes[root].items()
        if w in OBJECT_OR_TEXT
    )
    for root in REPORT_TYPES
}  # fmt: skip


# The body as one struct per root, ``{"<root>": {...}}``, so that a body whose first key
# names the root decodes to its model in one pass; any other key is refused, as is a body
# that is not one object. Keyed by the root's UTF-8 bytes, as read off the body.
_wrapped: Final[dict[bytes, msgspec.json.Decoder[Any]]] = {
    root.encode(): msgspec.json.Decoder(
        msgspec.defstruct(
            f"_{cls.__name__}Body",
            [("document", cls, msgspec.field(name=root))],
            forbid_unknown_fields=True,
            frozen=True,
            gc=False,
        ),
        strict=False,
    )
    for root, cls in REPORT_TYPES.items()
}


def _usual(model: Document, root: str) -> bool:
    """True when the tolerant path would read ``model`` the same: nothing in ``extra``, no
    object-or-text field holding text."""
    if model.extra:
        return False
    for name in _object_fields[root]:  # noqa: SIM110 - a loop costs less than all() here
        if isinstance(getattr(model, name), str):
            return False
    return True


def _fast(body: bytes) -> tuple[str, Document] | None:
    """Decode an ordinary JSON report straight to its model, or ``None`` to fall back."""
    try:
        outer = _envelope.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # invalid UTF-8: not DecodeError
        return None
    if len(outer) != 1:
        return None
    ((root, inner),) = outer.items()
    decoder = _decoders.get(root)
    if decoder is None:
        return None
    try:
        model: Document = decoder.decode(inner)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    return (root, model) if _usual(model, root) else None


def _decode_usual(body: bytes) -> tuple[str, Document] | None:
    """:func:`_fast`'s answer for a body that starts with its root key, else ``None``.

    The first key is read off the body as a guess; the decoder of that root checks it: a
    body decoded by it is one object whose only key is that root (given more than once,
    the last value counts, as in :func:`_fast`).
    """
    start = body.find(b'"') + 1
    decoder = _wrapped.get(body[start : body.find(b'"', start)])
    if decoder is None:
        return None
    try:
        model: Document = decoder.decode(body).document
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None
    return (model.ROOT, model) if _usual(model, model.ROOT) else None


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to read a recipe's body elements off one root's model."""

    recipe: Recipe
    """Kept so that the recipe's id, the plan's key, cannot be reused meanwhile."""
    values: Callable[[Any], tuple[Any, ...]]
    """The elements' values (``None`` for a field the model lacks), in one call."""
    absent: tuple[str, ...]
    lower: tuple[bool, ...] | None
    """Which elements are lower-cased; ``None`` when none is."""


def _plan(root: str, recipe: Recipe) -> _Plan:
    attributes = _attributes[root]
    names = [attributes.get(e.name) for e in recipe.elements]
    values: Callable[[Any], tuple[Any, ...]]
    if len(names) > 1 and None not in names:
        values = operator.attrgetter(*cast("list[str]", names))
    else:

        def values(model: Any) -> tuple[Any, ...]:
            return tuple(None if name is None else getattr(model, name) for name in names)

    lower = tuple(e.lower for e in recipe.elements)
    absent = tuple(e.absent for e in recipe.elements)
    plan = _Plan(recipe, values, absent, lower if any(lower) else None)
    _plans.setdefault(root, {})[id(recipe)] = plan
    return plan


# Root -> id(recipe) -> plan; keyed by identity, as hashing a Recipe (a dataclass) would
# cost more than the lookup saves.
_plans: dict[str, dict[int, _Plan]] = {}


def _model_elements(root: str, recipe: Recipe, model: Document) -> str:
    """The recipe's body elements read off a model (attribute names resolved once)."""
    plan = _plans.get(root, {}).get(id(recipe))
    if plan is None or plan.recipe is not recipe:
        plan = _plan(root, recipe)
    # element_text, spelled out for the usual types: text as is, integers in decimal.
    # (zip without strict=: its keyword costs more than the rest; the plan's tuples have
    # one entry per element, by construction.)
    texts = [
        value if type(value) is str
        else f"{value}" if type(value) is int
        else absent if value is None
        else element_text(value)
        for value, absent in zip(plan.values(model), plan.absent)  # noqa: B905
    ]  # fmt: skip
    if plan.lower is not None:
        texts = [t.lower() if low else t for t, low in zip(texts, plan.lower)]  # noqa: B905
    return "".join(texts)


def check_report(
    body: bytes,
    fmt: BodyFormat,
    raw_query: str,
    keys: Sequence[AsKey],
    *,
    as_id: str | None = None,
    now: datetime | None = None,
    max_drift: float | None = None,
    recipes: Mapping[str, Recipe] = DEFAULT_RECIPES,
    reports_only: bool = True,
) -> Checked:
    """Verify ``body`` + ``raw_query`` and decode the body, as one step.

    The verdict is exactly :func:`verify_report`'s. Raises
    :class:`~tpas.errors.DocumentError` for a body that cannot be read, before any token
    is checked when the body cannot be parsed at all, after a successful check when only
    its identity is invalid. With ``reports_only``, a root that has no recipe (a
    ``DevEUI_downlink`` request) comes back refused with reason ``None``: the caller
    decides how to answer it.
    """
    if type(body) is bytes and type(raw_query) is str:
        accepted = _accept(body, fmt, raw_query, keys, as_id, now, max_drift, recipes)
        if accepted is not None:
            return accepted
    query = parse_query(raw_query)
    fast = _fast(body) if fmt is not BodyFormat.XML else None
    if fast is not None:
        root, model = fast
        if reports_only and root not in recipes:
            return Checked(Verdict(False, None, f"{root} is not a report"), root, None)
        refusal, sent = check_query(query, as_id=as_id, now=now, max_drift=max_drift)
        if refusal is not None:
            return Checked(refusal, root, None)
        recipe = recipes[root]
        elements = _model_elements(root, recipe, model)
        dev_eui = getattr(model, "dev_eui", None)
        verdict = check_body(query, sent, dev_eui, getattr(model, "fport", None), elements, keys)
        if verdict.ok:
            return Checked(verdict, root, model, query.values["Token"].lower())
        if verdict.reason is not Reason.TOKEN_MISMATCH:
            return Checked(verdict, root, None)
    raw = parse(body, fmt)
    if reports_only and raw.root not in recipes:
        return Checked(Verdict(False, None, f"{raw.root} is not a report"), raw.root, None)
    refusal, sent = check_query(query, as_id=as_id, now=now, max_drift=max_drift)
    if refusal is not None:
        return Checked(refusal, raw.root, None)
    fields = raw.fields
    raw_recipe = recipes.get(raw.root)
    elements = body_elements(raw_recipe, fields) if raw_recipe else ""
    verdict = check_body(query, sent, fields.get("DevEUI"), fields.get("FPort"), elements, keys)
    if not verdict.ok:
        return Checked(verdict, raw.root, None)
    return Checked(verdict, raw.root, to_model(raw), query.values["Token"].lower())


def _accept(
    body: bytes,
    fmt: BodyFormat,
    raw_query: str,
    keys: Sequence[AsKey],
    as_id: str | None,
    now: datetime | None,
    max_drift: float | None,
    recipes: Mapping[str, Recipe],
) -> Checked | None:
    """:func:`check_report`'s answer for a usual report that verifies, else ``None``.

    The same checks as the general path, in the same terms, on the same values; the only
    shortcuts are in reading the query and the body, and they give up on anything unusual.
    """
    signed = read_signed(raw_query)
    if signed is None:
        return None
    lrn_dev_eui, lrn_fport, sent_as_id, time, token, query_string = signed
    if as_id is not None and sent_as_id.lower() != as_id.lower():
        return None
    sent = parse_time(time)
    if sent is None:
        return None
    if now is not None and max_drift is not None:
        drift = (now - sent).total_seconds()
        if drift > max_drift or drift < -max_drift:
            return None
    model: Document | None
    if fmt is BodyFormat.XML:
        read = read_usual(body)
        if read is None:
            return None
        root, fields = read
        recipe = recipes.get(root)
        if recipe is None:
            return None
        elements = body_elements(recipe, fields)
        dev_eui, fport = fields.get("DevEUI"), fields.get("FPort")
        model = None
    else:
        decoded = _decode_usual(body)
        if decoded is None:
            return None
        root, model = decoded
        recipe = recipes.get(root)
        if recipe is None:
            return None
        elements = _model_elements(root, recipe, model)
        dev_eui, fport = getattr(model, "dev_eui", None), getattr(model, "fport", None)
        if type(fport) is int:
            fport = str(fport)  # the text same_port would compare
    # Most reports repeat the body's values exactly: one comparison settles it.
    if dev_eui != lrn_dev_eui and not same_device(lrn_dev_eui, dev_eui):
        return None
    if fport != lrn_fport and not same_port(lrn_fport, fport):
        return None
    received = token.lower()
    found = find_key(elements, query_string, received, keys)
    if found is None:
        return None
    if model is None:
        model = convert_usual(root, fields)
        if model is None:
            return None
    verdict = Verdict(True, None, "token matches", found[0], found[1], elements, query_string, sent)
    return Checked(verdict, root, model, received)
