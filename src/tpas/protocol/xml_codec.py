"""XML bodies <-> raw documents and models (SPEC.md §2.2), with hostile input refused.

Before the parser sees a byte, the body must be UTF-8 (or ASCII) without NUL bytes, and
may contain no markup declaration other than comments and CDATA sections: no DOCTYPE, no
ENTITY, no ELEMENT/ATTLIST. Entity expansion attacks (billion laughs, quadratic blowup),
external entities and external DTDs therefore never reach the parser, and the refusal
costs a byte scan (QUALITY.md SEC-10). The parser itself (expat via ElementTree) opens no
file and no connection.

Shape: the root element names the report; each field is a child element with text; the
gateway list is ``<Lrrs><Lrr>...</Lrr>...</Lrrs>``; ``CustomerData`` and ``DriverCfg`` are
JSON text. Elements with children that tpas does not know are read as nested objects.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, Final

import msgspec

from tpas.errors import DocumentError, ForbiddenXmlError
from tpas.protocol.document import BodyFormat, RawDocument, to_wire
from tpas.protocol.models import OBJECT_OR_TEXT, REPORT_TYPES, Document

__all__ = ["NAMESPACE", "encode_xml", "parse_xml"]

NAMESPACE: Final = "http://uri.actility.com/lora"
_ALLOWED_MARKUP: Final = (b"<!--", b"<![CDATA[")
_DECLARED_ENCODING = re.compile(rb"\A\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_UTF8_NAMES: Final = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii"})
_json: Final = msgspec.json.Encoder()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _guard(body: bytes) -> bytes:
    """Refuse what must never reach the parser; return the body without a UTF-8 BOM."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if b"\x00" in body or body.startswith((b"\xfe\xff", b"\xff\xfe")):
        raise ForbiddenXmlError("only UTF-8 XML is accepted")
    start = body.find(b"<!")
    while start != -1:
        if not body.startswith(_ALLOWED_MARKUP, start):
            raise ForbiddenXmlError("DTDs and entity declarations are not accepted")
        start = body.find(b"<!", start + 2)
    declared = _DECLARED_ENCODING.match(body)
    if declared and declared.group(1).lower() not in _UTF8_NAMES:
        raise ForbiddenXmlError("only UTF-8 XML is accepted")
    return body


_names: dict[str, str] = {}
_NAMES_MAX: Final = 4096  # hostile bodies may invent tags: the cache stays bounded


def _local(tag: str) -> str:
    """The tag without its namespace (``{http://uri.actility.com/lora}DevEUI`` -> ``DevEUI``)."""
    name = _names.get(tag)
    if name is None:
        name = tag.rpartition("}")[2]
        if len(_names) < _NAMES_MAX:
            _names[tag] = name
    return name


def _value(element: ET.Element) -> Any:
    if len(element) == 0:
        return element.text or ""
    out: dict[str, Any] = {}
    for child in element:
        name = _local(child.tag)
        value = _value(child)
        if name in out:
            previous = out[name]
            if isinstance(previous, list):
                previous.append(value)
            else:
                out[name] = [previous, value]
        else:
            out[name] = value
    return out


def _gateway(element: ET.Element) -> Any:
    # A gateway with no field is written <Lrr /> and must read back as an empty gateway,
    # not as empty text (which would push the whole gateway list into ``extra``).
    if len(element) == 0 and not (element.text or "").strip():
        return {}
    return _value(element)


def parse_xml(body: bytes | str) -> RawDocument:
    """Parse an XML body whose root element is the report type."""
    data = _guard(body.encode() if isinstance(body, str) else body)
    try:
        root = ET.fromstring(data)  # noqa: S314 - input vetted by _guard: no DTD, UTF-8 only
    except ET.ParseError as exc:
        raise DocumentError(f"not well-formed XML ({exc})") from exc
    name = _local(root.tag)
    if name not in REPORT_TYPES:
        raise DocumentError("unknown report type", path=name)
    fields: dict[str, Any] = {}
    for child in root:
        key = _local(child.tag)
        if key == "Lrrs":
            fields[key] = {"Lrr": [_gateway(lrr) for lrr in child]}
        elif not len(child):
            fields[key] = child.text or ""
        else:
            fields[key] = _value(child)
    return RawDocument(name, fields, BodyFormat.XML)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    return _json.encode(value).decode()


def _append(parent: ET.Element, key: str, value: Any) -> None:
    if value is None:
        return
    if not _NAME.fullmatch(key):
        raise DocumentError("this field name cannot be written as XML", path=key)
    element = ET.SubElement(parent, key)
    if key == "Lrrs" and isinstance(value, dict):
        for gateway in value["Lrr"]:
            lrr = ET.SubElement(element, "Lrr")
            for name, item in gateway.items():
                _append(lrr, name, item)
    elif isinstance(value, dict) and key not in OBJECT_OR_TEXT:
        for name, item in value.items():
            _append(element, name, item)
    else:
        text = _text(value)
        if _NOT_XML_CHAR.search(text):
            raise DocumentError("value holds characters XML 1.0 cannot carry", path=key)
        element.text = text


def encode_xml(model: Document) -> bytes:
    """Render a model as ThingPark XML with the Actility namespace."""
    root = ET.Element(model.ROOT, xmlns=NAMESPACE)
    for key, value in to_wire(model).items():
        _append(root, key, value)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    # A parser turns a literal carriage return into a line feed; a reference survives.
    body = body.replace(b"\r", b"&#13;")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body
