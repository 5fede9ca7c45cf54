"""One front door for reading and writing bodies in any of the three formats."""

from __future__ import annotations

from tpas.errors import DocumentError
from tpas.protocol.document import BodyFormat, RawDocument, to_model
from tpas.protocol.json_codec import encode_json, parse_json
from tpas.protocol.models import Document
from tpas.protocol.xml_codec import encode_xml, parse_xml

__all__ = ["decode", "encode", "format_for_content_type", "parse", "sniff_format"]

_WHITESPACE = b" \t\r\n"


def sniff_format(body: bytes) -> BodyFormat:
    """Guess a body's format from its first significant byte (``<`` means XML)."""
    head = body[3:] if body.startswith(b"\xef\xbb\xbf") else body
    # A UTF-16 or UTF-32 body (BOM or NUL bytes up front) is sniffed as XML so that the
    # XML guard refuses it by name, rather than failing as "not JSON".
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head[:4]:
        return BodyFormat.XML
    return BodyFormat.XML if head.lstrip(_WHITESPACE)[:1] == b"<" else BodyFormat.JSON


def format_for_content_type(content_type: str) -> BodyFormat | None:
    """The body format a ``Content-Type`` announces, or ``None`` when it is not one of ours.

    ThingPark's XML content type is unpublished (SPEC.md §9.6), so both XML media types
    are accepted, as is any ``+json`` / ``+xml`` suffix.
    """
    media = content_type.partition(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return BodyFormat.JSON
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return BodyFormat.XML
    return None


def parse(body: bytes, fmt: BodyFormat | None = None) -> RawDocument:
    """Parse a body into a raw document; the format is sniffed when not given."""
    fmt = fmt or sniff_format(body)
    if fmt is BodyFormat.XML:
        return parse_xml(body)
    return parse_json(body)


def decode(body: bytes, fmt: BodyFormat | None = None) -> Document:
    """Parse and convert a body to its typed model."""
    return to_model(parse(body, fmt))


def encode(model: Document, fmt: BodyFormat) -> bytes:
    """Render a model in the given format."""
    if fmt is BodyFormat.XML:
        return encode_xml(model)
    if fmt is BodyFormat.JSON_UNTYPED:
        return encode_json(model, typed=False)
    if fmt is BodyFormat.JSON:
        return encode_json(model, typed=True)
    raise DocumentError(f"unknown format {fmt!r}")  # pragma: no cover - exhaustive enum
