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
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from tpas.errors import DocumentError, ForbiddenXmlError
from tpas.protocol.document import BodyFormat, RawDocument, gateway_list, to_wire
from tpas.protocol.models import OBJECT_OR_TEXT, REPORT_TYPES, Document, Gateway

__all__ = ["NAMESPACE", "encode_xml", "parse_xml", "read_usual"]

NAMESPACE: Final = "http://uri.actility.com/lora"
_ALLOWED_MARKUP: Final = (b"<!--", b"<![CDATA[")
_DECLARED_ENCODING = re.compile(rb"\A\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']")
_UTF8_NAMES: Final = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii"})
_UTF8_DECLARATIONS: Final = (
    b'<?xml version="1.0" encoding="UTF-8"?>',
    b'<?xml version="1.0" encoding="utf-8"?>',
)
_json: Final = msgspec.json.Encoder()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _guard(body: bytes) -> bytes:
    """Refuse what must never reach the parser; return the body without a UTF-8 BOM."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if b"\x00" in body or body.startswith((b"\xfe\xff", b"\xff\xfe")):
        raise ForbiddenXmlError("only UTF-8 XML is accepted")
    # Most bodies hold no '!' at all: one byte search says there is no markup to check.
    start = body.find(b"<!") if b"!" in body else -1
    while start != -1:
        if not body.startswith(_ALLOWED_MARKUP, start):
            raise ForbiddenXmlError("DTDs and entity declarations are not accepted")
        start = body.find(b"<!", start + 2)
    if body.startswith(_UTF8_DECLARATIONS):
        return body  # the usual declaration: what the expression below would find
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


def _is_gateway_list(element: ET.Element) -> bool:
    # <Lrrs> holding only <Lrr> gateways (elements with fields, or empty), or nothing; any
    # other shape is read as it is and kept in ``extra``, like the same shape in JSON.
    if len(element) == 0:
        return not (element.text or "").strip()
    return all(
        _local(item.tag) == "Lrr" and (len(item) or not (item.text or "").strip())
        for item in element
    )


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
        if key == "Lrrs" and _is_gateway_list(child):
            fields[key] = {"Lrr": [_gateway(lrr) for lrr in child]}
        elif not len(child):
            fields[key] = child.text or ""
        else:
            fields[key] = _value(child)
    return RawDocument(name, fields, BodyFormat.XML)


def _tags(names: Iterable[str]) -> dict[str, str]:
    """Element tag -> field name, for tags in the Actility namespace or in none."""
    return {tag: name for name in names for tag in (name, f"{{{NAMESPACE}}}{name}")}


def _known(cls: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(cls)} - {"extra"}


# Root tag -> (report type, tags of its text fields, tags of its Lrrs) for read_usual.
_USUAL: Final = {
    tag: (root, _tags(_known(cls) - {"Lrrs"}), frozenset(_tags(_known(cls) & {"Lrrs"})))
    for tag, root in _tags(REPORT_TYPES).items()
    for cls in (REPORT_TYPES[root],)
}
_GATEWAY_TAGS: Final = _tags(_known(Gateway))
_LRR_TAGS: Final = frozenset(_tags(["Lrr"]))


def read_usual(body: bytes) -> tuple[str, dict[str, Any]] | None:
    """The root and fields :func:`parse_xml` reads from a body of the usual shape, or
    ``None`` for any other body (``parse_xml`` then reads it, or says what is wrong).

    The usual shape: every child of the root a known field of its report type, holding
    text only, except ``Lrrs``, given once, whose gateways hold known fields, each once,
    as text only; every tag in the Actility namespace or in none. Tags are looked up
    whole, so a body of that shape costs one pass over its fields, no name splitting.
    """
    try:
        root = ET.fromstring(_without_namespace(_guard(body)))  # noqa: S314 - as parse_xml
    except (ForbiddenXmlError, ET.ParseError):
        return None
    usual = _USUAL.get(root.tag)
    if usual is None:
        return None
    name, texts, lrrs = usual
    fields: dict[str, Any] = {}
    try:
        for child in root:
            if not len(child):
                fields[texts[child.tag]] = child.text or ""
            elif child.tag in lrrs and "Lrrs" not in fields:
                gateways = []
                for lrr in child:
                    gateway = {_GATEWAY_TAGS[g.tag]: g.text or "" for g in lrr if not len(g)}
                    if len(gateway) != len(lrr) or not (gateway or _blank(lrr.text)):
                        return None
                    if lrr.tag not in _LRR_TAGS:
                        return None
                    gateways.append(gateway)
                fields["Lrrs"] = {"Lrr": gateways}
            else:
                return None
    except KeyError:
        return None
    return name, fields


_ROOT_NAMESPACE: Final = f' xmlns="{NAMESPACE}">'.encode()
_PROLOGS: Final = frozenset({b"", *_UTF8_DECLARATIONS})
_ROOTS: Final = frozenset(root.encode() for root in REPORT_TYPES)


def _without_namespace(data: bytes) -> bytes:
    """``data`` without the Actility namespace declaration of its root start tag, when
    that tag is ``<Root xmlns="http://uri.actility.com/lora">`` after at most the usual
    declaration and blanks; ``data`` itself otherwise.

    Both read the same: tpas reads names without their namespace, and no other name can
    depend on a default namespace. Without one, the parser spares building a qualified
    name for every element, and tags hash faster.
    """
    at = data.find(_ROOT_NAMESPACE)
    if at == -1:
        return data
    head, _, root = data[:at].rpartition(b"<")
    if root not in _ROOTS or head.strip() not in _PROLOGS:
        return data
    return data[:at] + data[at + len(_ROOT_NAMESPACE) - 1 :]


def _blank(text: str | None) -> bool:
    return not text or not text.strip()


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
    gateways = gateway_list(value) if key == "Lrrs" else None
    if gateways is not None:
        for gateway in gateways:
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
