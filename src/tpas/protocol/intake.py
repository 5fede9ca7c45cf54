"""Verify and decode a report in one step, fast for the common case (the ingest path).

Most reports are ordinary typed or untyped JSON: every key known, every value fitting its
type. For those, the body decodes straight into its model (one msgspec pass, C speed) and
the token is computed from the model's values. Anything else takes the tolerant path:
:func:`~tpas.protocol.codec.parse` to a raw document, :func:`verify_report` over the raw
values, :func:`to_model` keeping unknown fields in ``extra``. The fast path never decides
a refusal on its own: a token that does not match the model's values is checked again over
the raw values (they can differ in spelling, ``"02"`` against ``2``), so the verdict is
always the exact one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import msgspec

from tpas.protocol.codec import parse
from tpas.protocol.document import BodyFormat, to_model
from tpas.protocol.keys import AsKey
from tpas.protocol.models import OBJECT_OR_TEXT, REPORT_TYPES, Document
from tpas.protocol.query import parse_query
from tpas.protocol.token import (
    DEFAULT_RECIPES,
    Reason,
    Recipe,
    Verdict,
    body_elements,
    check_body,
    check_query,
    element_text,
)

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


def _fast(body: bytes) -> tuple[str, Document] | None:
    """Decode an ordinary JSON report straight to its model, or ``None`` to fall back."""
    try:
        outer = _envelope.decode(body)
    except msgspec.DecodeError:
        return None
    if len(outer) != 1:
        return None
    ((root, inner),) = outer.items()
    decoder = _decoders.get(root)
    if decoder is None:
        return None
    try:
        model: Document = decoder.decode(inner)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if model.extra:
        return None
    for name in _object_fields[root]:
        if isinstance(getattr(model, name), str):
            return None
    return root, model


_Plan = tuple[tuple[str | None, bool, str], ...]
# Keyed by identity: hashing a Recipe (a dataclass) would cost more than the lookup saves.
# The recipe is kept in the value so its id cannot be reused while the entry exists.
_plans: dict[tuple[str, int], tuple[Recipe, _Plan]] = {}


def _model_elements(root: str, recipe: Recipe, model: Document) -> str:
    """The recipe's body elements read off a model (attribute names resolved once)."""
    cached = _plans.get((root, id(recipe)))
    if cached is None or cached[0] is not recipe:
        attributes = _attributes[root]
        plan = tuple((attributes.get(e.name), e.lower, e.absent) for e in recipe.elements)
        cached = _plans[(root, id(recipe))] = (recipe, plan)
    parts = []
    for name, lower, absent in cached[1]:
        value = getattr(model, name) if name is not None else None
        if value is None:
            text = absent
        elif type(value) is str:
            text = value
        else:
            text = element_text(value)
        parts.append(text.lower() if lower else text)
    return "".join(parts)


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
