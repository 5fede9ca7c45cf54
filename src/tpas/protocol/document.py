"""A report document as received, and its conversion to and from the typed models.

Parsing a body (JSON or XML) gives a :class:`RawDocument`: the root name and the fields
exactly as they arrived (text from XML and untyped JSON, numbers from typed JSON). The
token is computed over these raw values (QUALITY.md SEC-3), before anything is converted.
:func:`to_model` then turns a raw document into its typed model, and :func:`to_wire`
turns a model back into ThingPark's key/value shape for the encoders.

Conversion is strict about identity and tolerant about the rest (SPEC.md §2.2, §9.12,
§9.15): the DevEUI (or a base station's LrrID) must be valid, but a field whose value does
not fit its type is kept, untouched, in ``extra`` rather than failing the whole report,
because ThingPark never re-sends a report we refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import msgspec

from tpas.errors import DocumentError
from tpas.protocol.models import OBJECT_OR_TEXT, REPORT_TYPES, Document, Gateway

__all__ = ["BodyFormat", "RawDocument", "gateway_list", "to_model", "to_wire"]


class BodyFormat(StrEnum):
    """The three body renderings ThingPark offers (SPEC.md §2.2)."""

    JSON = "json"
    """Typed JSON: numbers are JSON numbers."""
    JSON_UNTYPED = "json-untyped"
    """Untyped JSON: leaf values are strings (except the fields newer releases added)."""
    XML = "xml"
    """XML in the ``http://uri.actility.com/lora`` namespace."""


@dataclass(frozen=True, slots=True)
class RawDocument:
    """A parsed body before any conversion: root name and fields as received."""

    root: str
    fields: dict[str, Any]
    format: BodyFormat


@dataclass(frozen=True, slots=True)
class _TypeInfo:
    known: frozenset[str]
    identity: str


def _info(cls: type[msgspec.Struct]) -> _TypeInfo:
    names = {f.encode_name for f in msgspec.structs.fields(cls)} - {"extra"}
    identity = "LrrID" if "LrrID" in names else "DevEUI"
    return _TypeInfo(frozenset(names), identity)


_INFO: Final = {root: _info(cls) for root, cls in REPORT_TYPES.items()}
_GATEWAY: Final = _info(Gateway).known

# "Expected `str | null`, got `int` - at `$.Lrrs.Lrr[0].LrrRSSI`": one gateway field is
# repaired; any other path below a top-level key (`$.Lrrs.Lrr`, `$.Lrrs.Lrr[0]`: a gateway
# list of the wrong shape) sets that whole key aside.
_ERROR_PATH = re.compile(r" - at `\$\.([^`\[.]+)(?:\.Lrr\[(\d+)\]\.([^`\[.]+)|[^`]*)`$")


def _identity_value(value: Any, name: str) -> Any:
    # One of Actility's published samples leaves an XML closing tag in a JSON value
    # ("000000000F1D8693</DevEUI", SPEC.md §9.15); that converter artifact is dropped.
    if isinstance(value, str) and "</" in value:
        head, _, tail = value.partition("</")
        if tail.rstrip(">") == name:
            return head
    return value


def _object_or_text(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("{"):
        try:
            parsed = msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value
        if isinstance(parsed, dict):
            return parsed
    return value


def _split(fields: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """Move unknown keys of ``fields`` (in place) under ``"extra"``."""
    unknown = fields.keys() - known
    if unknown:
        # In the order received, so a report written back reads the same.
        fields["extra"] = {key: fields.pop(key) for key in [k for k in fields if k in unknown]}
    return fields


def _gateways(value: Any) -> Any:
    """``{"Lrr": [...]}``, or a lone ``{"Lrr": {...}}``, with each gateway's unknown keys
    under ``extra``; anything else is returned unchanged (and ends up in ``extra``)."""
    if not isinstance(value, dict) or value.keys() != {"Lrr"}:
        return value
    lrr = value["Lrr"]
    items = [lrr] if isinstance(lrr, dict) else lrr
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return value
    return {"Lrr": [_split(dict(item), _GATEWAY) for item in items]}


def gateway_list(value: Any) -> list[dict[str, Any]] | None:
    """The gateways of an ``Lrrs`` value in the models' wire shape (``{"Lrr": [{..}, ..]}``),
    or ``None`` for any other shape (one kept in ``extra``, written back as it came)."""
    if not isinstance(value, dict) or value.keys() != {"Lrr"}:
        return None
    items = value["Lrr"]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return None
    return items


def to_model(doc: RawDocument) -> Document:
    """Convert a raw document to its typed model.

    Raises :class:`~tpas.errors.DocumentError` naming the field path when the identity
    field is missing or invalid.
    """
    cls = REPORT_TYPES[doc.root]
    info = _INFO[doc.root]
    fields = dict(doc.fields)
    # An XML-to-JSON artifact in one Actility sample (SPEC.md §2.2): not data.
    fields.pop("-xmlns", None)
    # The Join-Request example spells the spreading factor "Spfact" (SPEC.md §5.1).
    if "Spfact" in fields and "SpFact" not in fields:
        fields["SpFact"] = fields.pop("Spfact")
    if info.identity in fields:
        fields[info.identity] = _identity_value(fields[info.identity], info.identity)
    # Also for names the model lacks (an uplink's IoT Flow ``payload`` lands in ``extra``):
    # the XML encoder writes these as JSON text, so reading must undo it.
    for name in OBJECT_OR_TEXT:
        if name in fields:
            fields[name] = _object_or_text(fields[name])
    if "Lrrs" in fields and "Lrrs" in info.known:
        fields["Lrrs"] = _gateways(fields["Lrrs"])
    return _convert(cls, _split(fields, info.known), doc.root, info.identity)


# Per root, the object-or-text fields its model has (to_model reads them from text).
_OBJECT_FIELDS: Final = {root: tuple(OBJECT_OR_TEXT & info.known) for root, info in _INFO.items()}


def convert_usual(root: str, fields: dict[str, Any]) -> Document | None:
    """:func:`to_model`'s result for fields of the usual shape, or ``None`` when
    ``to_model`` would have something to set aside or repair. Consumes ``fields``.

    The usual shape (what :func:`tpas.protocol.xml_codec.read_usual` gives): every name a
    field of the root's model, ``Lrrs`` already ``{"Lrr": [...]}`` with known gateway
    fields only. Then ``to_model`` only reads the object-or-text fields and converts, and
    so does this; a value that does not fit its type (to be moved to ``extra``), or an
    identity to clean, makes the conversion fail, and the answer is ``None``.
    """
    for name in _OBJECT_FIELDS[root]:
        if name in fields:
            fields[name] = _object_or_text(fields[name])
    try:
        return msgspec.convert(fields, REPORT_TYPES[root], strict=False)
    except msgspec.ValidationError:
        return None


def _convert(cls: type[Document], data: dict[str, Any], root: str, identity: str) -> Document:
    for _ in range(4 * len(data) + 8):
        try:
            return msgspec.convert(data, cls, strict=False)
        except msgspec.ValidationError as exc:
            _repair(data, str(exc), root, identity)
    raise DocumentError("cannot be converted", path=root)  # pragma: no cover - bounded loop


def _repair(data: dict[str, Any], message: str, root: str, identity: str) -> None:
    """Make one offending field acceptable, or raise if it is the report's identity."""
    if message.startswith("Object missing required field"):
        raise DocumentError("required field is missing", path=f"{root}.{identity}")
    match = _ERROR_PATH.search(message)
    if match is None:
        raise DocumentError(message, path=root)
    key, index, sub = match.groups()
    if key == identity:
        raise DocumentError(message.partition(" - at ")[0], path=f"{root}.{key}")
    container, name = data, key
    if index is not None and sub is not None:
        gateway = data[key]["Lrr"][int(index)]
        if not isinstance(gateway, dict):  # pragma: no cover - _gateways builds dicts
            raise DocumentError(message, path=f"{root}.{key}")
        container, name = gateway, sub
    value = container[name]
    if (
        message.startswith("Expected `str")
        and isinstance(value, int | float)
        and not (isinstance(value, bool))
    ):
        # A text field sent as a number by typed JSON: the text is the number.
        container[name] = _number_text(value)
        return
    container.setdefault("extra", {})[name] = container.pop(name)


def _number_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_wire(model: Document) -> dict[str, Any]:
    """A model as ThingPark's key/value shape, with ``extra`` merged back in place."""
    data: dict[str, Any] = msgspec.to_builtins(model)
    extra = data.pop("extra", None)
    lrrs = data.get("Lrrs")
    if isinstance(lrrs, dict):
        # An empty gateway list equals its default and is omitted; the wire shape keeps it.
        for gateway in lrrs.setdefault("Lrr", []):
            gateway_extra = gateway.pop("extra", None)
            if gateway_extra:
                gateway.update(gateway_extra)
    if extra:
        data.update(extra)
    return data
