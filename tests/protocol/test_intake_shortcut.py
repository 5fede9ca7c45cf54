"""Property: check_report's shortcut for usual reports changes no outcome (QUALITY.md SEC-3).

``check_report`` reads a usual query and body without the tolerant parser, and falls back
to it for anything else. Whatever path a report takes, the outcome must be the one of the
reference path: ``parse`` -> ``verify_report`` -> ``to_model``, over the values exactly as
received. Reports here are signed over those values, so most verify; the rendering of the
query and of the body varies around the usual shape, on both sides of every shortcut.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol.test_roundtrip import models
from tpas.errors import InputError
from tpas.protocol import (
    DEFAULT_RECIPES,
    REPORT_TYPES,
    AsKey,
    BodyFormat,
    Document,
    Uplink,
    Verdict,
    body_elements,
    canonical_query,
    check_report,
    compute_token,
    encode,
    parse,
    parse_query,
    to_model,
    verify_report,
)
from tpas.protocol.query import read_signed
from tpas.protocol.xml_codec import read_usual

KEY: Final = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KEYS: Final = (AsKey("46ab678cd45df4a4e4b375Eacd096acc"), AsKey(KEY))
AS_ID: Final = "TWA_100002167.1111.AS"
NOW: Final = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
TIME: Final = "2025-03-14T10:26:10.135+01:00"
FORMATS: Final = list(BodyFormat)
NAMESPACE: Final = 'xmlns="http://uri.actility.com/lora"'

Outcome = tuple[Any, ...]


def _values(body: bytes, fmt: BodyFormat, time: str = TIME) -> dict[str, str]:
    """The signed query parameters for a body, read by the reference parser."""
    raw = parse(body, fmt)
    fport = raw.fields.get("FPort")
    return {
        "LrnDevEui": str(raw.fields.get("DevEUI", "")),
        "LrnFPort": "0" if fport is None else str(fport),
        "LrnInfos": f"{AS_ID}-1-651291",
        "AS_ID": AS_ID,
        "Time": time,
    }


def _token(body: bytes, fmt: BodyFormat, values: dict[str, str]) -> str:
    raw = parse(body, fmt)
    elements = body_elements(DEFAULT_RECIPES[raw.root], raw.fields)
    return compute_token(elements, canonical_query(values), KEY)


def thingpark_query(body: bytes, fmt: BodyFormat) -> str:
    """The query as ThingPark lays it out: signed order, Time percent-encoded, Token last."""
    values = _values(body, fmt)
    encoded = "&".join(f"{name}={quote(value, safe='')}" for name, value in values.items())
    return f"{encoded}&Token={_token(body, fmt, values)}"


def reference(body: bytes, fmt: BodyFormat, query: str, **options: Any) -> Outcome:
    """The outcome of the tolerant path: refused, accepted with its model, or an error."""
    try:
        raw = parse(body, fmt)
    except InputError as exc:
        return ("error", type(exc))
    verdict = verify_report(raw, query, KEYS, as_id=AS_ID, **options)
    if not verdict.ok:
        return (_refusal(verdict),)
    try:
        model = to_model(raw)
    except InputError as exc:
        return ("error", type(exc))
    return (verdict, raw.root, model)


def checked(body: bytes, fmt: BodyFormat, query: str, **options: Any) -> Outcome:
    """The outcome of check_report, in the reference's terms."""
    try:
        result = check_report(body, fmt, query, KEYS, as_id=AS_ID, **options)
    except InputError as exc:
        return ("error", type(exc))
    if not result.verdict.ok:
        return (_refusal(result.verdict),)
    assert result.token == parse_query(query).values["Token"].lower()
    return (result.verdict, result.root, result.model)


def _refusal(verdict: Verdict) -> tuple[Any, ...]:
    return (verdict.reason, verdict.detail, verdict.query_time)


def assert_same(body: bytes, fmt: BodyFormat, query: str, **options: Any) -> Outcome:
    """check_report and the reference agree on ``body`` + ``query``; returns the outcome."""
    expected = reference(body, fmt, query, **options)
    assert checked(body, fmt, query, **options) == expected
    return expected


SHORTCUT = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.value for f in FORMATS])
@SHORTCUT
@given(model=models(Uplink))
def test_any_signed_uplink_gets_the_reference_outcome(fmt: BodyFormat, model: Uplink) -> None:
    """An uplink of any content, signed as ThingPark signs it, gets the reference outcome."""
    try:
        body = encode(model, fmt)
    except InputError:
        return  # a value this format cannot carry: nothing to send
    assert_same(body, fmt, thingpark_query(body, fmt), now=NOW, max_drift=120.0)


@pytest.mark.parametrize("root", sorted(DEFAULT_RECIPES))
@pytest.mark.parametrize("fmt", FORMATS, ids=[f.value for f in FORMATS])
@SHORTCUT
@given(data=st.data())
def test_any_signed_report_gets_the_reference_outcome(
    root: str, fmt: BodyFormat, data: st.DataObject
) -> None:
    """A report of any type and content, signed, gets the reference outcome."""
    model: Document = data.draw(models(REPORT_TYPES[root]))
    try:
        body = encode(model, fmt)
    except InputError:
        return
    assert_same(body, fmt, thingpark_query(body, fmt), now=NOW, max_drift=120.0)


# --------------------------------------------------------------------------- queries

USUAL_UPLINK: Final = Uplink(
    customer_id="100002167",
    dev_eui="DCF4BB99F4BEA973",
    fport=219,
    fcnt_up=40388,
    payload_hex="50c9c99466ae",
    time="2025-03-14T11:26:45.954+02:00",
    rssi=-91.115402,
    lrrs=None,
    customer_data={"alr": {"pro": "ABEE/APY", "ver": "1"}, "tags": ["a", "b"]},
    driver_cfg={"mod": {"pId": "abeeway", "mId": "micro-tracker", "ver": "3"}},
    raw_mac_commands="",
    tx_power=14.0,
)


def _render(values: dict[str, str], token: str, quote_value: Callable[[str], str]) -> str:
    return "&".join(f"{k}={quote_value(v)}" for k, v in {**values, "Token": token}.items())


def _query_variants() -> list[Any]:
    def build(
        change: Callable[[dict[str, str], str], str],
        alter: Callable[[dict[str, str]], dict[str, str]] | None = None,
    ) -> Callable[[bytes, BodyFormat], str]:
        """A query rendered by ``change``, signed over the values ``alter`` gives."""

        def query(body: bytes, fmt: BodyFormat) -> str:
            values = _values(body, fmt)
            if alter is not None:
                values = alter(values)
            return change(values, _token(body, fmt, values))

        return query

    def signed(v: dict[str, str], t: str) -> str:
        return _render(v, t, encoded)

    def encoded(value: str) -> str:
        return quote(value, safe="")

    def as_is(value: str) -> str:
        return value

    def reorder(v: dict[str, str], t: str) -> str:
        return _render(dict(reversed(v.items())), t, encoded)

    return [
        pytest.param(build(lambda v, t: _render(v, t, encoded)), id="thingpark"),
        pytest.param(build(lambda v, t: _render(v, t, as_is)), id="time-plus-raw"),
        pytest.param(
            build(lambda v, t: _render(v, t, encoded).replace("%3A", "%3a")), id="lower-escape"
        ),
        pytest.param(build(lambda v, t: "?" + _render(v, t, encoded)), id="question-mark"),
        pytest.param(build(lambda v, t: "??" + _render(v, t, encoded)), id="two-question-marks"),
        pytest.param(build(reorder), id="any-order"),
        pytest.param(build(lambda v, t: _render(v, t, encoded) + "&x=1"), id="extra-parameter"),
        pytest.param(build(lambda v, t: _render(v, t, encoded) + "&"), id="trailing-ampersand"),
        pytest.param(build(lambda v, t: _render(v, t, encoded) + "&AS_ID=" + AS_ID), id="repeated"),
        pytest.param(
            build(lambda v, t: _render(v, t, encoded).replace("LrnInfos=", "L%72nInfos=")),
            id="escaped-name",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "LrnInfos": "a b&c"}),
            id="escaped-infos",
        ),
        pytest.param(build(lambda v, t: _render(v, t.upper(), encoded)), id="upper-token"),
        pytest.param(build(lambda v, t: _render(v, t[:-1] + "0", encoded)), id="wrong-token"),
        pytest.param(build(lambda v, t: _render(v, t + "%41", encoded)), id="escaped-token"),
        pytest.param(build(lambda v, t: _render(v, t, encoded)[:-64]), id="empty-token"),
        pytest.param(
            build(signed, lambda v: {**v, "AS_ID": AS_ID.lower()}),
            id="as-id-case",
        ),
        pytest.param(build(signed, lambda v: {**v, "AS_ID": "TWA_1.1.AS"}), id="bad-as-id"),
        pytest.param(
            build(signed, lambda v: {**v, "Time": "2025-03-14T09:00:00Z"}),
            id="stale-time",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "Time": "2025-03-14T12:00:00+01:00"}),
            id="future-time",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "Time": "yesterday"}),
            id="malformed-time",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "Time": "2025-03-14T09:26:10"}),
            id="naive-time",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "LrnDevEui": v["LrnDevEui"].lower()}),
            id="dev-eui-case",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "LrnDevEui": "0000000000000001"}),
            id="other-dev-eui",
        ),
        pytest.param(
            build(signed, lambda v: {**v, "LrnFPort": "0" + v["LrnFPort"]}),
            id="port-leading-zero",
        ),
        pytest.param(build(signed, lambda v: {**v, "LrnFPort": "2"}), id="other-port"),
    ]


@pytest.mark.parametrize("query", _query_variants())
@pytest.mark.parametrize("fmt", FORMATS, ids=[f.value for f in FORMATS])
def test_query_renderings_get_the_reference_outcome(
    query: Callable[[bytes, BodyFormat], str], fmt: BodyFormat
) -> None:
    """Usual and unusual query renderings give the outcome of the reference path."""
    body = encode(USUAL_UPLINK, fmt)
    assert_same(body, fmt, query(body, fmt), now=NOW, max_drift=120.0)


def test_time_window_edges_get_the_reference_outcome() -> None:
    """Reports just inside and just outside the freshness window are judged alike."""
    body = encode(USUAL_UPLINK, BodyFormat.JSON)
    for drift in (119.999999, 120.0, 120.000001, -119.999999, -120.0, -120.000001):
        sent = datetime.fromtimestamp(NOW.timestamp() - drift, UTC).isoformat()
        values = {**_values(body, BodyFormat.JSON), "Time": sent}
        query = _render(values, _token(body, BodyFormat.JSON, values), quote)
        assert_same(body, BodyFormat.JSON, query, now=NOW, max_drift=120.0)


# --------------------------------------------------------------------------- bodies

USUAL_JSON: Final = encode(USUAL_UPLINK, BodyFormat.JSON)
USUAL_XML: Final = encode(USUAL_UPLINK, BodyFormat.XML)

JSON_BODIES: Final = [
    pytest.param(USUAL_JSON, id="usual"),
    pytest.param(USUAL_JSON.replace(b'":', b'": ').replace(b",", b", "), id="spaced"),
    pytest.param(b'\n  {\n  "DevEUI_uplink" : ' + USUAL_JSON[17:], id="blank-first"),
    pytest.param(b"\xef\xbb\xbf" + USUAL_JSON, id="bom"),
    pytest.param(USUAL_JSON.replace(b"DevEUI_uplink", b"DevEUI\\u005fuplink", 1), id="escaped"),
    pytest.param(USUAL_JSON[:-1] + b',"DevEUI_location":{}}', id="two-roots"),
    pytest.param(USUAL_JSON[:-1] + b"," + USUAL_JSON[1:-1] + b"}", id="root-twice"),
    pytest.param(b'{"DevEUI_uplink":{"DevEUI":"0"},' + USUAL_JSON[1:], id="root-twice-first-bad"),
    pytest.param(USUAL_JSON.replace(b'"FPort"', b'"Unknown":1,"FPort"'), id="unknown-field"),
    pytest.param(USUAL_JSON.replace(b'"FPort"', b'"extra":{"a":1},"FPort"'), id="extra-key"),
    pytest.param(USUAL_JSON.replace(b"219", b'"0219"'), id="port-text-leading-zero"),
    pytest.param(USUAL_JSON.replace(b"219", b"219.0"), id="port-float"),
    pytest.param(USUAL_JSON.replace(b"40388", b'"40388"'), id="counter-text"),
    pytest.param(USUAL_JSON.replace(b'"DCF4BB99F4BEA973"', b'"dcf4bb99f4bea973"'), id="eui-lower"),
    pytest.param(USUAL_JSON.replace(b'"DCF4BB99F4BEA973"', b'"DCF4"'), id="eui-invalid"),
    pytest.param(
        USUAL_JSON.replace(b'"DCF4BB99F4BEA973"', b'"DCF4BB99F4BEA973</DevEUI"'),
        id="eui-artifact",
    ),
    pytest.param(USUAL_JSON.replace(b'"rawMacCommands":""', b'"rawMacCommands":7'), id="num-text"),
    pytest.param(
        USUAL_JSON.replace(b'"CustomerData":{', b'"CustomerData":"x","Z":{'), id="object-as-text"
    ),
    pytest.param(USUAL_JSON.replace(b"-91.115402", b"1e999"), id="float-overflow"),
    pytest.param(USUAL_JSON.replace(b'"FPort":219,', b""), id="no-port"),
    pytest.param(USUAL_JSON[:-2], id="truncated"),
    pytest.param(b'{"DevEUI_uplink":[]}', id="not-an-object"),
    pytest.param(USUAL_JSON.replace(b"ABEE/APY", b"ABEE\xff"), id="not-utf-8"),
]


def _xml(old: bytes, new: bytes, count: int = 1) -> bytes:
    assert old in USUAL_XML, old
    return USUAL_XML.replace(old, new, count)


XML_BODIES: Final = [
    pytest.param(USUAL_XML, id="usual"),
    pytest.param(_xml(b" " + NAMESPACE.encode(), b""), id="no-namespace"),
    pytest.param(_xml(NAMESPACE.encode(), b'xmlns="urn:other"'), id="other-namespace"),
    pytest.param(_xml(NAMESPACE.encode(), b"\n    " + NAMESPACE.encode()), id="tag-on-lines"),
    pytest.param(
        _xml(NAMESPACE.encode(), b'xmlns="http://uri.actility.com/lora" a="1"'), id="attribute"
    ),
    pytest.param(
        _xml(b"<DevEUI_uplink " + NAMESPACE.encode(), b'<l:DevEUI_uplink xmlns:l="x"').replace(
            b"</DevEUI_uplink>", b"</l:DevEUI_uplink>"
        ),
        id="prefixed-root",
    ),
    pytest.param(_xml(b"<FPort>", b'<FPort xmlns="">'), id="child-unqualified"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<x:FPort>219</x:FPort>"), id="unbound-prefix"),
    pytest.param(
        _xml(b'<?xml version="1.0" encoding="UTF-8"?>', b"<?xml version='1.0'?>"),
        id="declaration-quotes",
    ),
    pytest.param(_xml(b'encoding="UTF-8"', b'encoding="us-ascii"'), id="declaration-ascii"),
    pytest.param(_xml(b"encoding", b"encodingx"), id="declaration-bad"),
    pytest.param(USUAL_XML.partition(b"\n")[2], id="no-declaration"),
    pytest.param(b"\n" + USUAL_XML.partition(b"\n")[2], id="blank-before-root"),
    pytest.param(b" " + USUAL_XML, id="blank-before-declaration"),
    pytest.param(b"\xef\xbb\xbf" + USUAL_XML, id="bom"),
    pytest.param(_xml(b"<FPort>", b"<!-- c --><FPort>"), id="comment"),
    pytest.param(_xml(b"<FPort>219", b"<FPort><![CDATA[2]]>19"), id="cdata"),
    pytest.param(_xml(b"<FPort>219", b"<FPort>2&#49;9"), id="char-reference"),
    pytest.param(_xml(b"<FPort>219", b"<FPort>&lt;219"), id="entity"),
    pytest.param(_xml(b"<FPort>219", b"<FPort>219\r\n"), id="carriage-return"),
    pytest.param(_xml(b"<FPort>219", b"<FPort>219&#13;"), id="carriage-return-reference"),
    pytest.param(_xml(b"<FPort>219", b"<FPort>21<?pi x?>9"), id="processing-instruction"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort>219</FPort><FPort>7</FPort>"), id="twice"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort><a>1</a></FPort>"), id="nested"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort>219</FPort><Unknown/>"), id="unknown"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort>219</FPort><Spfact>7</Spfact>"), id="spfact"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort/>"), id="empty-port"),
    pytest.param(_xml(b"<FPort>219</FPort>", b""), id="no-port"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort>x</FPort>"), id="port-not-a-number"),
    pytest.param(_xml(b"<FPort>219</FPort>", b"<FPort>219</FPort>tail"), id="text-between"),
    pytest.param(_xml(b"<rawMacCommands />", b"<rawMacCommands> </rawMacCommands>"), id="blank"),
    pytest.param(_xml(b"</CustomerData>", b"}</CustomerData>"), id="customer-data-bad-json"),
    pytest.param(
        _xml(b"DCF4BB99F4BEA973</DevEUI>", b"DCF4BB99F4BEA973&lt;/DevEUI</DevEUI>"),
        id="eui-artifact",
    ),
    pytest.param(_xml(b"DCF4BB99F4BEA973</DevEUI>", b"DCF4</DevEUI>"), id="eui-invalid"),
    pytest.param(_xml(b"</DevEUI_uplink>", b"</DevEUI_uplink><!-- end -->"), id="comment-after"),
    pytest.param(_xml(b"<DevEUI>", b"<!DOCTYPE x><DevEUI>"), id="doctype"),
    pytest.param(_xml(b"</DevEUI_uplink>", b"</DevEUI_uplinkX>"), id="not-well-formed"),
]

GATEWAYS: Final = Uplink(
    customer_id="100002167",
    dev_eui="DCF4BB99F4BEA973",
    fport=2,
    fcnt_up=7,
    payload_hex="00",
    lrrs=None,
)
LRRS: Final = (
    b"<Lrrs><Lrr><Lrrid>080603DB</Lrrid><Chain>0</Chain><LrrRSSI>-103.0</LrrRSSI></Lrr>"
    b"<Lrr><Lrrid>FF010421</Lrrid><LrrSNR>-23.000000</LrrSNR></Lrr></Lrrs>"
)
GATEWAY_BODIES: Final = [
    pytest.param(LRRS, id="usual"),
    pytest.param(LRRS.replace(b"><", b">\n  <"), id="indented"),
    pytest.param(LRRS + LRRS, id="lrrs-twice"),
    pytest.param(b"<Lrrs/>", id="empty-lrrs"),
    pytest.param(b"<Lrrs> </Lrrs>", id="blank-lrrs"),
    pytest.param(b"<Lrrs><Lrr/><Lrr> </Lrr></Lrrs>", id="empty-gateways"),
    pytest.param(b"<Lrrs><Lrr>text</Lrr></Lrrs>", id="gateway-text"),
    pytest.param(
        LRRS.replace(b"<Lrr>", b"<Gateway>").replace(b"</Lrr>", b"</Gateway>"), id="not-lrr"
    ),
    pytest.param(LRRS.replace(b"<Lrr>", b'<Lrr xmlns="urn:x">', 1), id="lrr-other-namespace"),
    pytest.param(LRRS.replace(b"<Chain>0</Chain>", b"<Chain>0</Chain><Chain>1</Chain>"), id="dup"),
    pytest.param(LRRS.replace(b"<Chain>0</Chain>", b"<Chain><a/></Chain>"), id="nested"),
    pytest.param(LRRS.replace(b"<Chain>0</Chain>", b"<Other>0</Other>"), id="unknown"),
    pytest.param(LRRS.replace(b"<Chain>0</Chain>", b"<Chain>zero</Chain>"), id="bad-value"),
    pytest.param(LRRS.replace(b"<Lrr>", b"<Lrr>text", 1), id="text-and-fields"),
    pytest.param(LRRS.replace(b"<Lrrs>", b'<Lrrs xmlns="">'), id="unqualified"),
]


@pytest.mark.parametrize("body", JSON_BODIES)
@pytest.mark.parametrize("fmt", [BodyFormat.JSON, BodyFormat.JSON_UNTYPED])
def test_json_renderings_get_the_reference_outcome(body: bytes, fmt: BodyFormat) -> None:
    """Usual and unusual JSON bodies, signed over what they hold, get the reference outcome."""
    _check_body(body, fmt)


@pytest.mark.parametrize("body", XML_BODIES)
def test_xml_renderings_get_the_reference_outcome(body: bytes) -> None:
    """Usual and unusual XML bodies, signed over what they hold, get the reference outcome."""
    _check_body(body, BodyFormat.XML)


@pytest.mark.parametrize("lrrs", GATEWAY_BODIES)
def test_xml_gateway_lists_get_the_reference_outcome(lrrs: bytes) -> None:
    """Usual and unusual XML gateway lists get the reference outcome."""
    body = encode(GATEWAYS, BodyFormat.XML).replace(b"</DevEUI_uplink>", lrrs + b"</DevEUI_uplink>")
    assert_same(body, BodyFormat.XML, _query_for(body, BodyFormat.XML), now=NOW, max_drift=120.0)
    _check_body(body.replace(b" " + NAMESPACE.encode(), b""), BodyFormat.XML)


def _query_for(body: bytes, fmt: BodyFormat) -> str:
    """A ThingPark query signing ``body``, or a well-formed one when it cannot be read."""
    try:
        return thingpark_query(body, fmt)
    except (InputError, KeyError):
        return thingpark_query(USUAL_JSON, BodyFormat.JSON)


def _check_body(body: bytes, fmt: BodyFormat) -> None:
    assert_same(body, fmt, _query_for(body, fmt), now=NOW, max_drift=120.0)
    assert_same(body, fmt, _query_for(body, fmt))


# --------------------------------------------------------------------------- shortcuts


@pytest.mark.parametrize("body", XML_BODIES)
def test_xml_shortcut_reads_what_parse_reads_or_nothing(body: bytes) -> None:
    """The XML shortcut reads a body exactly as parse does, or declines it."""
    read = read_usual(body)
    if read is not None:
        raw = parse(body, BodyFormat.XML)
        assert read == (raw.root, raw.fields)


def test_xml_shortcut_takes_the_usual_bodies() -> None:
    """The XML shortcut reads the bodies ThingPark sends, with or without the namespace."""
    for body in (USUAL_XML, USUAL_XML.replace(b" " + NAMESPACE.encode(), b"")):
        assert read_usual(body) is not None
    gateways = encode(GATEWAYS, BodyFormat.XML).replace(b"</DevEUI_uplink>", LRRS + b"</")
    assert read_usual(gateways + b"DevEUI_uplink>") is not None


@pytest.mark.parametrize("query", _query_variants())
def test_query_shortcut_reads_what_parse_query_reads_or_nothing(
    query: Callable[[bytes, BodyFormat], str],
) -> None:
    """The query shortcut reads the signed values as parse_query does, or declines."""
    raw = query(USUAL_JSON, BodyFormat.JSON)
    signed = read_signed(raw)
    if signed is not None:
        values = parse_query(raw).values
        names = ("LrnDevEui", "LrnFPort", "AS_ID", "Time", "Token")
        assert signed == (*(values[name] for name in names), canonical_query(values))


def test_query_shortcut_takes_the_thingpark_layout() -> None:
    """The query shortcut reads queries laid out as ThingPark sends them."""
    assert read_signed(thingpark_query(USUAL_JSON, BodyFormat.JSON)) is not None
