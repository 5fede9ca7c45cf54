"""Typed and untyped JSON bodies <-> raw documents and models (SPEC.md §2.2).

Both JSON renderings parse the same way: values are kept as received and the typed
conversion (:func:`tpas.protocol.document.to_model`) accepts numbers or numeric text for
every numeric field. Encoding picks the rendering: typed JSON writes numbers, untyped JSON
writes text, except ``TxPower`` and ``NbTrans`` which real untyped captures carry as bare
numbers (SPEC.md §9.12).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from tpas.errors import DocumentError
from tpas.protocol.document import BodyFormat, RawDocument, gateway_list, to_wire
from tpas.protocol.models import OBJECT_OR_TEXT, REPORT_TYPES, Document

__all__ = ["encode_json", "parse_json"]

_UNTYPED_NUMBERS: Final = frozenset({"TxPower", "NbTrans"})
_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


def parse_json(body: bytes | str) -> RawDocument:
    """Parse a JSON body whose single top-level key is the report type."""
    if isinstance(body, bytes) and body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        obj = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DocumentError(f"not valid JSON ({exc})") from exc
    except UnicodeDecodeError as exc:
        # msgspec checks UTF-8 only when it builds a string, and raises this, not DecodeError.
        raise DocumentError(f"not valid UTF-8 at byte {exc.start}") from exc
    if not isinstance(obj, dict) or not obj:
        raise DocumentError("expected a JSON object holding one report")
    if len(obj) != 1:
        keys = ", ".join(sorted(map(str, obj))[:5])
        raise DocumentError(f"expected exactly one report key at the top level, found: {keys}")
    root, fields = next(iter(obj.items()))
    if root not in REPORT_TYPES:
        raise DocumentError("unknown report type", path=root)
    if not isinstance(fields, dict):
        raise DocumentError("the report must be a JSON object", path=root)
    return RawDocument(root, fields, BodyFormat.JSON)


def _text(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


def _untyped(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _UNTYPED_NUMBERS or key in OBJECT_OR_TEXT:
            out[key] = value
        elif key == "Lrrs" and (gateways := gateway_list(value)) is not None:
            out[key] = {"Lrr": [{k: _text(v) for k, v in g.items()} for g in gateways]}
        else:
            out[key] = _text(value)
    return out


def encode_json(model: Document, *, typed: bool = True) -> bytes:
    """Render a model as typed (default) or untyped JSON."""
    data = to_wire(model)
    return _encoder.encode({model.ROOT: data if typed else _untyped(data)})
