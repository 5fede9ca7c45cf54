"""Strict about a report's identity, tolerant about everything else (SPEC.md §2.2, §9.15)."""

from __future__ import annotations

import json
from typing import Any
from xml.sax.saxutils import escape

import pytest

from tpas.errors import DocumentError, InputError
from tpas.protocol import (
    REPORT_TYPES,
    BodyFormat,
    DownlinkRequest,
    Gateway,
    Report,
    Uplink,
    decode,
)

NAMESPACE = "http://uri.actility.com/lora"
FORMATS = list(BodyFormat)
FORMAT_IDS = [fmt.value for fmt in FORMATS]
ROOTS = sorted(REPORT_TYPES)


def _identity(root: str) -> str:
    return "LrrID" if root == "BS_alarm" else "DevEUI"


def _valid_identity(root: str) -> str:
    return "100001C2" if root == "BS_alarm" else "0059AC0000000001"


def _untyped(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _untyped(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_untyped(item) for item in value]
    return str(value)


def _xml_children(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            inner = _xml_children(item) if isinstance(item, dict) else escape(str(item))
            parts.append(f"<{key}>{inner}</{key}>")
    return "".join(parts)


def render(root: str, fields: dict[str, Any], fmt: BodyFormat) -> bytes:
    """A body written by hand (not by tpas's encoder), so invalid shapes can be made."""
    if fmt is BodyFormat.XML:
        children = _xml_children(fields)
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{root} xmlns="{NAMESPACE}">{children}</{root}>'
        ).encode()
    if fmt is BodyFormat.JSON_UNTYPED:
        return json.dumps({root: _untyped(fields)}).encode()
    return json.dumps({root: fields}).encode()


def _bad_identity(root: str, kind: str) -> str:
    good = _valid_identity(root)
    return {"too-short": good[:-2], "non-hex": good[:-1] + "G", "too-long": good + "0"}.get(
        kind, ""
    )


BAD_IDENTITIES = [
    pytest.param(root, fmt, _bad_identity(root, kind), id=f"{root}-{fmt.value}-{kind}")
    for root in ROOTS
    for fmt in FORMATS
    for kind in ("too-short", "non-hex", "too-long", "empty")
]


@pytest.mark.parametrize(("root", "fmt", "value"), BAD_IDENTITIES)
def test_invalid_identity_is_refused_with_its_path(root: str, fmt: BodyFormat, value: str) -> None:
    """A DevEUI (or LrrID) that is not exactly its hex digits fails, naming Root.Field."""
    identity = _identity(root)
    body = render(root, {identity: value, "CustomerID": "1"}, fmt)

    with pytest.raises(DocumentError) as caught:
        decode(body, fmt)

    assert caught.value.path == f"{root}.{identity}"
    assert str(caught.value).startswith(f"{root}.{identity}: ")


@pytest.mark.parametrize("root", ROOTS)
def test_numeric_identity_in_typed_json_is_refused(root: str) -> None:
    """A typed-JSON identity given as a number is refused, naming Root.Field."""
    identity = _identity(root)
    body = json.dumps({root: {identity: 1234567890123456}}).encode()

    with pytest.raises(DocumentError) as caught:
        decode(body)

    assert caught.value.path == f"{root}.{identity}"


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("root", ROOTS)
def test_missing_identity_is_refused_with_its_path(root: str, fmt: BodyFormat) -> None:
    """A report without its DevEUI (LrrID for a base-station alarm) fails naming the field."""
    body = render(root, {"CustomerID": "100000001", "Time": "2018-01-12T10:00:00+01:00"}, fmt)

    with pytest.raises(DocumentError) as caught:
        decode(body, fmt)

    assert caught.value.path == f"{root}.{_identity(root)}"


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize("root", ROOTS)
def test_valid_identity_alone_is_enough(root: str, fmt: BodyFormat) -> None:
    """A report holding only its identity decodes: every other field is optional."""
    identity = _identity(root)
    model = decode(render(root, {identity: _valid_identity(root)}, fmt), fmt)
    assert type(model) is REPORT_TYPES[root]
    assert model.extra == {}


JSON_STRUCTURE = [
    pytest.param(b"{}", "", id="empty-object"),
    pytest.param(b"[]", "", id="array"),
    pytest.param(b"42", "", id="scalar"),
    pytest.param(b"", "", id="empty-body"),
    pytest.param(b'{"DevEUI_uplink": {', "", id="not-json"),
    pytest.param(b"\xff\xfe{}", "", id="not-utf8"),
    pytest.param(
        b'{"DevEUI_uplink": {"DevEUI": "0059AC0000000001"}, "DevEUI_location": {}}',
        "",
        id="two-top-level-keys",
    ),
    pytest.param(b'{"DevEUI_foo": {"DevEUI": "0059AC0000000001"}}', "DevEUI_foo", id="unknown"),
    pytest.param(b'{"DevEUI_uplink": "0059AC0000000001"}', "DevEUI_uplink", id="not-object"),
    pytest.param(b'{"DevEUI_uplink": null}', "DevEUI_uplink", id="null-report"),
]


@pytest.mark.parametrize(("body", "path"), JSON_STRUCTURE)
def test_json_without_one_known_report_is_refused(body: bytes, path: str) -> None:
    """A JSON body that is not exactly one known report object fails with a DocumentError."""
    with pytest.raises(DocumentError) as caught:
        decode(body, BodyFormat.JSON)
    assert caught.value.path == path


XML_STRUCTURE = [
    pytest.param(b"", "", id="empty-body"),
    pytest.param(b"<DevEUI_uplink>", "", id="unclosed-root"),
    pytest.param(b"<DevEUI_uplink><DevEUI></DevEUI_uplink>", "", id="mismatched-tag"),
    pytest.param(b"<DevEUI_uplink/><DevEUI_uplink/>", "", id="two-roots"),
    pytest.param(b"<DevEUI_uplink>&bogus;</DevEUI_uplink>", "", id="undefined-entity"),
    pytest.param(b"not xml at all", "", id="text"),
    pytest.param(
        f'<Foo xmlns="{NAMESPACE}"><DevEUI>0059AC0000000001</DevEUI></Foo>'.encode(),
        "Foo",
        id="unknown-root",
    ),
    pytest.param(
        b"<DevEUI_foo><DevEUI>0059AC0000000001</DevEUI></DevEUI_foo>",
        "DevEUI_foo",
        id="unknown-root-without-namespace",
    ),
]


@pytest.mark.parametrize(("body", "path"), XML_STRUCTURE)
def test_xml_without_one_known_report_is_refused(body: bytes, path: str) -> None:
    """An XML body that is not well-formed or has an unknown root fails with a DocumentError."""
    with pytest.raises(DocumentError) as caught:
        decode(body, BodyFormat.XML)
    assert caught.value.path == path


def test_document_error_is_an_input_error() -> None:
    """A DocumentError is an InputError with a stable reason code and the field path."""
    with pytest.raises(InputError) as caught:
        decode(b'{"DevEUI_uplink": {"DevEUI": "xyz"}}')
    assert isinstance(caught.value, DocumentError)
    assert caught.value.reason == "malformed_document"
    assert caught.value.detail
    assert caught.value.path == "DevEUI_uplink.DevEUI"


TOLERATED = [
    pytest.param("DevEUI_uplink", "LrrRSSI", "abc", "rssi", id="uplink-LrrRSSI"),
    pytest.param("DevEUI_uplink", "FPort", "x", "fport", id="uplink-FPort"),
    pytest.param("DevEUI_uplink", "FCntUp", "1.5", "fcnt_up", id="uplink-FCntUp-fraction"),
    pytest.param("DevEUI_uplink", "DevLAT", "north", "dev_lat", id="uplink-DevLAT"),
    pytest.param("DevEUI_notification", "FCntDn", "many", "fcnt_dn", id="notification-FCntDn"),
    pytest.param("DevEUI_location", "DevAlt", "high", "dev_alt", id="location-DevAlt"),
    pytest.param(
        "DevEUI_downlink_Sent", "DeliveryStatus", "ok", "delivery_status", id="sent-Status"
    ),
    pytest.param("DevEUI_downlink_Rejected", "FPort", "-", "fport", id="rejected-FPort"),
    pytest.param("DevEUI_multicast_summary", "LrrCnt", "?", "lrr_cnt", id="multicast-LrrCnt"),
    pytest.param("DevEUI_alarm", "State", "on", "state", id="alarm-State"),
    pytest.param("BS_alarm", "Occurrence", "twice", "occurrence", id="bs-alarm-Occurrence"),
    pytest.param("DevEUI_downlink", "Confirmed", "yes", "confirmed", id="downlink-Confirmed"),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize(("root", "field", "value", "attribute"), TOLERATED)
def test_bad_non_identity_value_is_kept_in_extra(
    root: str, field: str, value: str, attribute: str, fmt: BodyFormat
) -> None:
    """A non-identity field whose value does not fit its type is kept untouched in extra."""
    identity = _identity(root)
    time = "2018-01-12T10:00:00.000+01:00"
    fields = {identity: _valid_identity(root), field: value, "Time": time}

    model = decode(render(root, fields, fmt), fmt)

    assert getattr(model, attribute) is None
    assert model.extra == {field: value}
    assert isinstance(model, Report | DownlinkRequest)
    assert model.time == time


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_bad_gateway_value_is_kept_in_the_gateway_extra(fmt: BodyFormat) -> None:
    """A gateway field with a bad value lands in that gateway's extra, the rest is typed."""
    fields = {
        "DevEUI": "0059AC0000000001",
        "Lrrs": {
            "Lrr": [
                {"Lrrid": "08040059", "LrrRSSI": "abc", "LrrSNR": "9.75"},
                {"Lrrid": "33d13a41", "LrrRSSI": "-73.0"},
            ]
        },
    }

    model = decode(render("DevEUI_uplink", fields, fmt), fmt)

    assert isinstance(model, Uplink)
    assert model.gateways == [
        Gateway(lrrid="08040059", snr=9.75, extra={"LrrRSSI": "abc"}),
        Gateway(lrrid="33d13a41", rssi=-73.0),
    ]
    assert model.extra == {}


@pytest.mark.parametrize("fmt", FORMATS, ids=FORMAT_IDS)
def test_several_bad_values_are_all_kept(fmt: BodyFormat) -> None:
    """Every bad non-identity value is kept, however many there are."""
    bad = {"FPort": "x", "FCntUp": "y", "LrrRSSI": "z", "Late": "maybe", "TxPower": "hot"}
    fields = {"DevEUI": "0059AC0000000001", "payload_hex": "00", **bad}

    model = decode(render("DevEUI_uplink", fields, fmt), fmt)

    assert isinstance(model, Uplink)
    assert model.payload_hex == "00"
    assert model.extra == bad


def test_text_field_sent_as_a_number_is_read_as_text() -> None:
    """Typed JSON giving a text field (CustomerID, Lrrid) as a number keeps its decimal text."""
    body = json.dumps(
        {"DevEUI_uplink": {"DevEUI": "0059AC0000000001", "CustomerID": 100000001, "Lrrid": 8.0}}
    ).encode()

    model = decode(body)

    assert isinstance(model, Uplink)
    assert model.customer_id == "100000001"
    assert model.lrrid == "8"
