"""Hostile XML is refused before parsing, without touching a file or the network (SEC-10).

Two recorders prove it: a ``sys.addaudithook`` hook (installed once per process, since an
audit hook cannot be removed, and recording only inside :meth:`AuditRecorder.recording`)
and a wrapper around the ``ElementTree.fromstring`` the codec calls.
"""

from __future__ import annotations

import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tpas.errors import DocumentError, ForbiddenXmlError
from tpas.protocol import BodyFormat, Uplink, decode, encode, parse, xml_codec

HOSTILE = [
    "billion_laughs.xml",
    "declared_iso_8859_1.xml",
    "declared_utf16.xml",
    "doctype_after_comment.xml",
    "doctype_without_declaration.xml",
    "external_dtd.xml",
    "external_entity.xml",
    "parameter_entities.xml",
    "quadratic_blowup.xml",
    "utf16_bom.xml",
    "utf16le_no_bom.xml",
    "utf32_bom.xml",
]
# Events that would mean a file, a process or the network was touched.
FORBIDDEN_EVENTS = ("open", "socket.", "urllib.", "http.", "ftplib.", "os.", "subprocess.")


class AuditRecorder:
    """Collects audit event names, but only while :meth:`recording` is active."""

    def __init__(self) -> None:
        self.installed = False
        self.active = False
        self.events: list[str] = []

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active:
            self.events.append(event)

    @contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Record the events raised inside the block into the yielded list."""
        self.events = []
        self.active = True
        try:
            yield self.events
        finally:
            self.active = False

    @staticmethod
    def forbidden(events: list[str]) -> list[str]:
        return [event for event in events if event.startswith(FORBIDDEN_EVENTS)]


_RECORDER = AuditRecorder()


@pytest.fixture(scope="session")
def audit() -> AuditRecorder:
    """The process-wide audit recorder (an audit hook cannot be removed, so install once)."""
    if not _RECORDER.installed:
        sys.addaudithook(_RECORDER.hook)
        _RECORDER.installed = True
    return _RECORDER


@pytest.fixture
def parser_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body handed to ElementTree.fromstring by the XML codec, recorded."""
    calls: list[bytes] = []
    original: Callable[..., ET.Element] = ET.fromstring

    def recording_fromstring(text: Any, *args: Any, **kwargs: Any) -> ET.Element:
        calls.append(text)
        return original(text, *args, **kwargs)

    # The name the codec calls, patched where it looks it up.
    monkeypatch.setattr("tpas.protocol.xml_codec.ET.fromstring", recording_fromstring)
    return calls


def test_hostile_corpus_is_complete(fixtures_dir: Path) -> None:
    """Every file of the hostile corpus is exercised below."""
    assert sorted(path.name for path in (fixtures_dir / "hostile").glob("*.xml")) == HOSTILE


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_xml_is_refused_before_parsing(
    fixtures_dir: Path, audit: AuditRecorder, parser_calls: list[bytes], name: str
) -> None:
    """A hostile XML body is a ForbiddenXmlError, raised with no parse, file or socket."""
    body = (fixtures_dir / "hostile" / name).read_bytes()

    with audit.recording() as events, pytest.raises(ForbiddenXmlError) as caught:
        decode(body, BodyFormat.XML)

    assert caught.value.reason == "forbidden_xml"
    assert AuditRecorder.forbidden(events) == []
    assert parser_calls == []


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_xml_is_refused_when_the_format_is_sniffed(
    fixtures_dir: Path, audit: AuditRecorder, parser_calls: list[bytes], name: str
) -> None:
    """Without a declared format a hostile body is still a DocumentError, never parsed as XML."""
    # UTF-16/32 bodies do not start with a '<' byte, so they are sniffed as JSON and refused
    # by the JSON decoder instead (a DocumentError, but not a ForbiddenXmlError).
    body = (fixtures_dir / "hostile" / name).read_bytes()

    with audit.recording() as events, pytest.raises(DocumentError):
        decode(body)

    assert AuditRecorder.forbidden(events) == []
    assert parser_calls == []


TEXT_ENCODINGS = {
    "utf16_bom.xml": "utf-16",
    "utf16le_no_bom.xml": "utf-16-le",
    "utf32_bom.xml": "utf-32",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_xml_as_text_is_refused(
    fixtures_dir: Path, parser_calls: list[bytes], name: str
) -> None:
    """A hostile body handed over as decoded text is refused too (its declaration remains)."""
    body = (fixtures_dir / "hostile" / name).read_bytes()
    text = body.decode(TEXT_ENCODINGS.get(name, "ascii"))

    with pytest.raises(ForbiddenXmlError):
        xml_codec.parse_xml(text)

    assert parser_calls == []


def test_audit_recorder_sees_file_and_socket_access(tmp_path: Path, audit: AuditRecorder) -> None:
    """The recorder does see an open and a socket, so its silence above means something."""
    with audit.recording() as events:
        (tmp_path / "probe.txt").write_text("x", encoding="utf-8")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM):
            pass

    assert "open" in events
    assert any(event.startswith("socket.") for event in events)
    assert audit.active is False


def test_parser_recorder_sees_a_benign_parse(parser_calls: list[bytes]) -> None:
    """The fromstring wrapper records a benign parse, so its silence above means something."""
    body = encode(Uplink(dev_eui="0059AC0000000001"), BodyFormat.XML)
    assert parse(body, BodyFormat.XML).root == "DevEUI_uplink"
    assert len(parser_calls) == 1


ACCEPTED = [
    pytest.param(
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<DevEUI_uplink xmlns="http://uri.actility.com/lora">'
        b"<DevEUI>0059AC0000000001</DevEUI></DevEUI_uplink>",
        id="lower-case-utf-8-declaration",
    ),
    pytest.param(
        b"<?xml version='1.0' encoding='US-ASCII'?>"
        b"<DevEUI_uplink><DevEUI>0059AC0000000001</DevEUI></DevEUI_uplink>",
        id="ascii-declaration",
    ),
    pytest.param(
        b"\xef\xbb\xbf<DevEUI_uplink><DevEUI>0059AC0000000001</DevEUI></DevEUI_uplink>",
        id="utf-8-bom",
    ),
    pytest.param(
        b"<!-- captured --><DevEUI_uplink><DevEUI>0059AC0000000001</DevEUI>"
        b"<CustomerID><![CDATA[100000001]]></CustomerID></DevEUI_uplink>",
        id="comment-and-cdata",
    ),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_benign_markup_is_accepted(body: bytes) -> None:
    """UTF-8/ASCII declarations, a UTF-8 BOM, comments and CDATA are not refused."""
    model = decode(body)
    assert isinstance(model, Uplink)
    assert model.dev_eui == "0059AC0000000001"


def test_xinclude_is_not_followed(audit: AuditRecorder) -> None:
    """An XInclude element is read as an unknown field: the file it names is never opened."""
    body = (
        b'<DevEUI_uplink xmlns="http://uri.actility.com/lora" '
        b'xmlns:xi="http://www.w3.org/2001/XInclude">'
        b"<DevEUI>0059AC0000000001</DevEUI>"
        b'<xi:include href="file:///etc/passwd" parse="text"/></DevEUI_uplink>'
    )

    with audit.recording() as events:
        model = decode(body)

    assert AuditRecorder.forbidden(events) == []
    assert model.extra == {"include": ""}
