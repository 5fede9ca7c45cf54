"""Property: any change to a signed report is refused, for the right reason (SPEC.md §3.3)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tpas.protocol import (
    DEFAULT_RECIPES,
    SIGNED_PARAMETERS,
    AsKey,
    BaseStationAlarm,
    BodyFormat,
    DeviceAlarm,
    Document,
    DownlinkRejected,
    DownlinkSent,
    InvalidKeyError,
    Location,
    MulticastSummary,
    Notification,
    RawDocument,
    Reason,
    Uplink,
    Verdict,
    body_elements,
    canonical_query,
    compute_token,
    encode,
    parse,
    verify_report,
)

TAMPER = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ROOTS: Final = sorted(DEFAULT_RECIPES)
ALL_PARAMETERS: Final = (*SIGNED_PARAMETERS, "Token")
HEX = "0123456789abcdefABCDEF"


def hex_text(length: int) -> st.SearchStrategy[str]:
    """Exactly ``length`` hex digits, either case."""
    return st.text(HEX, min_size=length, max_size=length)


CUSTOMER_IDS: Final = st.from_regex(r"[0-9]{1,12}", fullmatch=True)
COUNTERS: Final = st.integers(min_value=0, max_value=2**32)
PORTS: Final = st.integers(min_value=0, max_value=255)
PAYLOADS: Final = st.integers(min_value=1, max_value=16).flatmap(lambda n: hex_text(2 * n))
AS_IDS: Final = st.from_regex(r"[0-9A-Za-z._-]{1,24}", fullmatch=True)
LRN_INFOS: Final = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
OFFSETS: Final = st.sampled_from(
    [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
)
MOMENTS: Final = st.datetimes(
    min_value=datetime(2015, 1, 1),  # noqa: DTZ001 - bounds for st.datetimes must be naive
    max_value=datetime(2035, 1, 1),  # noqa: DTZ001
    timezones=OFFSETS,
)
TIMES: Final = MOMENTS.map(lambda moment: moment.isoformat(timespec="milliseconds"))


@dataclasses.dataclass(frozen=True)
class Signed:
    """A report, its query parameters (decoded) and the key that signed both."""

    model: Document
    fmt: BodyFormat
    params: dict[str, str]
    key: str

    @property
    def doc(self) -> RawDocument:
        return parse(encode(self.model, self.fmt), self.fmt)

    @property
    def token(self) -> str:
        elements = body_elements(DEFAULT_RECIPES[self.model.ROOT], self.doc.fields)
        return compute_token(elements, canonical_query(self.params), self.key)

    def query(self, params: Mapping[str, str] | None = None, token: str | None = None) -> str:
        """The percent-encoded query, Token last (by default the correct one)."""
        values = {**(params if params is not None else self.params), "Token": token or self.token}
        return "&".join(f"{name}={quote(value, safe='')}" for name, value in values.items())


def _build(root: str, draw: st.DrawFn) -> Document:
    customer_id = draw(CUSTOMER_IDS, label="CustomerID")
    dev_eui = draw(hex_text(16), label="DevEUI")
    if root == "DevEUI_uplink":
        return Uplink(
            customer_id=customer_id,
            dev_eui=dev_eui,
            fport=draw(PORTS),
            fcnt_up=draw(COUNTERS),
            payload_hex=draw(PAYLOADS),
        )
    if root == "DevEUI_downlink_Sent":
        return DownlinkSent(
            customer_id=customer_id, dev_eui=dev_eui, fport=draw(PORTS), fcnt_dn=draw(COUNTERS)
        )
    if root == "DevEUI_downlink_Rejected":
        return DownlinkRejected(customer_id=customer_id, dev_eui=dev_eui, fport=draw(PORTS))
    if root == "DevEUI_multicast_summary":
        return MulticastSummary(customer_id=customer_id, dev_eui=dev_eui, fport=draw(PORTS))
    if root == "BS_alarm":
        return BaseStationAlarm(customer_id=customer_id, lrr_id=draw(hex_text(8)))
    others: dict[str, type[Location | Notification | DeviceAlarm]] = {
        "DevEUI_location": Location,
        "DevEUI_notification": Notification,
        "DevEUI_alarm": DeviceAlarm,
    }
    return others[root](customer_id=customer_id, dev_eui=dev_eui)


@st.composite
def signed_reports(draw: st.DrawFn, roots: tuple[str, ...] = tuple(ROOTS)) -> Signed:
    """A correctly signed report of any type with a recipe, in any body format."""
    root = draw(st.sampled_from(roots), label="root")
    model = _build(root, draw)
    dev_eui = getattr(model, "dev_eui", None) or draw(hex_text(16))
    fport = getattr(model, "fport", None)
    params = {
        "LrnDevEui": dev_eui.lower() if root == "DevEUI_location" else dev_eui,
        "LrnFPort": str(fport if fport is not None else 0),
        "LrnInfos": draw(LRN_INFOS, label="LrnInfos"),
        "AS_ID": draw(AS_IDS, label="AS_ID"),
        "Time": draw(TIMES, label="Time"),
    }
    fmt = draw(st.sampled_from(list(BodyFormat)), label="format")
    return Signed(model, fmt, params, draw(hex_text(32), label="key"))


def _verify(signed: Signed, query: str, **options: Any) -> Verdict:
    return verify_report(signed.doc, query, [AsKey(signed.key)], **options)


@TAMPER
@given(signed=signed_reports())
def test_signed_report_verifies(signed: Signed) -> None:
    """A report signed over its recipe, query and key verifies with that key."""
    verdict = _verify(signed, signed.query(), as_id=signed.params["AS_ID"].upper())
    assert verdict.ok, verdict.detail
    assert verdict.key_index == 0


_NEW_VALUES: Final[dict[str, st.SearchStrategy[Any]]] = {
    "CustomerID": CUSTOMER_IDS,
    "DevEUI": hex_text(16),
    "FPort": PORTS,
    "FCntUp": COUNTERS,
    "FCntDn": COUNTERS,
    "payload_hex": PAYLOADS,
}


def _expected_for_body_change(model: Document, wire_name: str, old: Any, new: Any) -> Reason | None:
    """The reason verification must give once ``wire_name`` changed from ``old`` to ``new``."""
    if wire_name == "DevEUI":
        if new.lower() != old.lower():
            return Reason.BODY_QUERY_MISMATCH
        lowered = any(e.lower for e in DEFAULT_RECIPES[model.ROOT].elements if e.name == "DevEUI")
        return None if lowered else Reason.TOKEN_MISMATCH
    if wire_name == "FPort":
        return Reason.BODY_QUERY_MISMATCH
    return Reason.TOKEN_MISMATCH


@TAMPER
@given(signed=signed_reports(), data=st.data())
def test_changed_signed_body_field_is_refused(signed: Signed, data: st.DataObject) -> None:
    """Changing any body field of the recipe fails: FPort/DevEUI mismatch the query, others
    the token (a location DevEUI changed only in case is the same report)."""
    query = signed.query()
    attributes = {f.encode_name: f.name for f in msgspec.structs.fields(signed.model)}
    names = [
        element.name
        for element in DEFAULT_RECIPES[signed.model.ROOT].elements
        if element.name in attributes
    ]
    wire_name = data.draw(st.sampled_from(names), label="field")
    old = getattr(signed.model, attributes[wire_name])
    new = data.draw(_NEW_VALUES[wire_name].filter(lambda value: value != old), label="new")
    changed = msgspec.structs.replace(signed.model, **{attributes[wire_name]: new})

    verdict = verify_report(
        parse(encode(changed, signed.fmt), signed.fmt), query, [AsKey(signed.key)]
    )

    expected = _expected_for_body_change(signed.model, wire_name, old, new)
    assert verdict.ok is (expected is None)
    assert verdict.reason is expected


def _expected_for_query_change(
    signed: Signed, name: str, new: str, now: datetime, max_drift: float
) -> Reason:
    body = signed.doc.fields
    old = signed.params[name]
    if name == "LrnDevEui" and "DevEUI" in body and new.lower() != old.lower():
        return Reason.BODY_QUERY_MISMATCH
    if name == "LrnFPort" and "FPort" in body and int(new) != int(old):
        return Reason.BODY_QUERY_MISMATCH
    if name == "AS_ID" and new.lower() != old.lower():
        return Reason.BAD_AS_ID
    if name == "Time":
        sent = datetime.fromisoformat(new)
        if (now - sent).total_seconds() > max_drift:
            return Reason.STALE_TIME
        if (sent - now).total_seconds() > max_drift:
            return Reason.FUTURE_TIME
    return Reason.TOKEN_MISMATCH


_QUERY_VALUES: Final[dict[str, st.SearchStrategy[str]]] = {
    "LrnDevEui": hex_text(16),
    # Leading zeros give the same port as text that hashes differently.
    "LrnFPort": st.builds(lambda zeros, port: "0" * zeros + str(port), st.integers(0, 2), PORTS),
    "LrnInfos": LRN_INFOS,
    "AS_ID": AS_IDS,
}


@pytest.mark.parametrize("name", SIGNED_PARAMETERS)
@TAMPER
@given(signed=signed_reports(), data=st.data())
def test_changed_signed_query_parameter_is_refused(
    name: str, signed: Signed, data: st.DataObject
) -> None:
    """Changing a signed query parameter fails with the reason its checks give, in order."""
    sent = datetime.fromisoformat(signed.params["Time"])
    now = sent + timedelta(seconds=5)
    if name == "Time":
        # Mostly shifts around the signed time, so in-window and out-of-window changes occur.
        shifted = st.integers(-120, 120).map(
            lambda seconds: (sent + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
        )
        new = data.draw(st.one_of(shifted, TIMES), label="new")
    else:
        new = data.draw(_QUERY_VALUES[name], label="new")
    assume(new != signed.params[name])
    params = {**signed.params, name: new}

    verdict = _verify(
        signed, signed.query(params), as_id=signed.params["AS_ID"], now=now, max_drift=60
    )

    expected = _expected_for_query_change(signed, name, new, now, 60)
    event(expected.value)
    assert not verdict.ok
    assert verdict.reason is expected


@TAMPER
@given(signed=signed_reports(), data=st.data())
def test_changed_as_id_without_configured_as_id_is_a_token_mismatch(
    signed: Signed, data: st.DataObject
) -> None:
    """With no AS_ID configured, a changed AS_ID is still caught: it is hashed."""
    new = data.draw(AS_IDS.filter(lambda value: value != signed.params["AS_ID"]))

    verdict = _verify(signed, signed.query({**signed.params, "AS_ID": new}))

    assert verdict.reason is Reason.TOKEN_MISMATCH


@TAMPER
@given(signed=signed_reports(), data=st.data())
def test_changed_token_digit_is_refused(signed: Signed, data: st.DataObject) -> None:
    """Replacing any one hex digit of the token by another one is a token mismatch."""
    token = signed.token
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    digit = data.draw(st.sampled_from("0123456789abcdef").filter(lambda d: d != token[position]))
    forged = token[:position] + digit + token[position + 1 :]

    verdict = _verify(signed, signed.query(token=forged))

    assert not verdict.ok
    assert verdict.reason is Reason.TOKEN_MISMATCH
    assert verdict.key_index is None


# Deterministic cases around one fixed, correctly signed uplink (vector UL-6's inputs).
KEY: Final = "c6f5e3b263092120b8766b9aed9c41b4"
UPLINK: Final = Signed(
    Uplink(
        customer_id="100000001",
        dev_eui="0059AC0000000001",
        fport=1,
        fcnt_up=1,
        payload_hex="000102030405",
    ),
    BodyFormat.JSON,
    {
        "LrnDevEui": "0059AC0000000001",
        "LrnFPort": "1",
        "LrnInfos": "TWA_100000001.999.AS-1-12345678",
        "AS_ID": "TWA_100000001.999",
        "Time": "2018-01-12T10:00:00.000+01:00",
    },
    KEY,
)
SENT: Final = datetime(2018, 1, 12, 9, 0, tzinfo=UTC)


def test_fixed_uplink_is_vector_ul6() -> None:
    """The fixed report below is UL-6, so the deterministic cases start from a known token."""
    assert UPLINK.token == "5b7ec8b0b2c250fc792c76348de3b16ff04e27050baf8a37c891dcc85e88b0d4"
    assert _verify(UPLINK, UPLINK.query()).ok


@pytest.mark.parametrize("name", ALL_PARAMETERS)
def test_missing_parameter_is_refused(name: str) -> None:
    """A query lacking any signed parameter or the Token is refused as missing_parameter."""
    parts = [part for part in UPLINK.query().split("&") if not part.startswith(f"{name}=")]

    verdict = _verify(UPLINK, "&".join(parts))

    assert verdict.reason is Reason.MISSING_PARAMETER
    assert name in verdict.detail


@pytest.mark.parametrize("same_value", [True, False], ids=["same-value", "other-value"])
@pytest.mark.parametrize("name", ALL_PARAMETERS)
def test_repeated_parameter_is_refused(name: str, same_value: bool) -> None:
    """A parameter given twice is refused, even with the same value twice."""
    query = UPLINK.query()
    value = dict(part.partition("=")[::2] for part in query.split("&"))[name]
    repeated = f"{query}&{name}={value if same_value else value + '0'}"

    verdict = _verify(UPLINK, repeated)

    assert verdict.reason is Reason.REPEATED_PARAMETER
    assert name in verdict.detail


MALFORMED_TIMES = [
    pytest.param("", id="empty"),
    pytest.param("yesterday", id="word"),
    pytest.param("2018-13-12T10:00:00.000+01:00", id="month-13"),
    pytest.param("2015-01-27T10:00.123:46+01:00", id="actility-typo"),
    pytest.param("1515747600", id="epoch-seconds"),
]


@pytest.mark.parametrize("time", MALFORMED_TIMES)
def test_malformed_time_is_refused(time: str) -> None:
    """A query Time that is not ISO-8601 is refused as malformed_time before any hashing."""
    verdict = _verify(UPLINK, UPLINK.query({**UPLINK.params, "Time": time}))
    assert verdict.reason is Reason.MALFORMED_TIME
    assert verdict.body_elements == ""


DRIFT = [
    pytest.param(SENT, Reason.TOKEN_MISMATCH, id="now-equal-but-token-forged"),
    pytest.param(SENT + timedelta(seconds=30), None, id="30s-old-within-window"),
    pytest.param(SENT - timedelta(seconds=30), None, id="30s-ahead-within-window"),
    pytest.param(SENT + timedelta(seconds=30.001), Reason.STALE_TIME, id="just-stale"),
    pytest.param(SENT - timedelta(seconds=30.001), Reason.FUTURE_TIME, id="just-future"),
    pytest.param(SENT + timedelta(days=400), Reason.STALE_TIME, id="replayed-a-year-later"),
]


@pytest.mark.parametrize(("now", "reason"), DRIFT)
def test_time_window_is_checked_against_now(now: datetime, reason: Reason | None) -> None:
    """With now and max_drift given, a Time more than max_drift away is stale or future."""
    forged = "0" * 64 if reason is Reason.TOKEN_MISMATCH else None

    verdict = _verify(UPLINK, UPLINK.query(token=forged), now=now, max_drift=30)

    assert verdict.reason is reason
    assert verdict.ok is (reason is None)
    assert verdict.query_time == SENT


def test_time_window_is_not_checked_without_now() -> None:
    """Without ``now`` (or without ``max_drift``) an old Time is not refused for its age."""
    later = SENT + timedelta(days=3000)
    assert _verify(UPLINK, UPLINK.query()).ok
    assert _verify(UPLINK, UPLINK.query(), now=later).ok
    assert _verify(UPLINK, UPLINK.query(), max_drift=1).ok


def test_as_id_is_compared_case_insensitively() -> None:
    """The configured AS_ID matches the query's whatever the case; another one does not."""
    assert _verify(UPLINK, UPLINK.query(), as_id="twa_100000001.999").ok
    verdict = _verify(UPLINK, UPLINK.query(), as_id="TWA_100000001.998")
    assert verdict.reason is Reason.BAD_AS_ID


ROTATION = [
    pytest.param([KEY], 0, id="only-key"),
    pytest.param(["00" * 16, KEY], 1, id="new-key-first-old-still-valid"),
    pytest.param([KEY, "11" * 16], 0, id="signer-first"),
    pytest.param(["00" * 16, "11" * 16, KEY.upper()], 2, id="signer-upper-case-last"),
]


@pytest.mark.parametrize(("keys", "index"), ROTATION)
def test_key_rotation_reports_the_matching_key(keys: list[str], index: int) -> None:
    """With several keys configured, the verdict names the index of the one that matched."""
    verdict = verify_report(UPLINK.doc, UPLINK.query(), [AsKey(key) for key in keys])
    assert verdict.ok
    assert verdict.key_index == index


def test_no_matching_key_is_a_token_mismatch() -> None:
    """No configured key (or none that matches) is a token mismatch naming no key."""
    for keys in ([], [AsKey("00" * 16), AsKey("11" * 16)]):
        verdict = verify_report(UPLINK.doc, UPLINK.query(), keys)
        assert verdict.reason is Reason.TOKEN_MISMATCH
        assert verdict.key_index is None


VERDICTS = [
    pytest.param(UPLINK.query(), {}, id="ok"),
    pytest.param(UPLINK.query(token="0" * 64), {}, id="token-mismatch"),
    pytest.param(UPLINK.query(), {"as_id": "other"}, id="bad-as-id"),
    pytest.param(UPLINK.query(), {"now": SENT + timedelta(hours=1), "max_drift": 1}, id="stale"),
]


@pytest.mark.parametrize(("query", "options"), VERDICTS)
@pytest.mark.parametrize("configured", [KEY, KEY.upper()], ids=["lower-key", "upper-key"])
def test_verdict_never_holds_the_key(query: str, options: dict[str, Any], configured: str) -> None:
    """Neither repr(verdict) nor any text field of a verdict contains the key, in any case."""
    verdict = verify_report(UPLINK.doc, query, [AsKey(configured)], **options)

    texts = [repr(verdict), str(verdict)]
    texts += [
        value
        for value in (getattr(verdict, f.name) for f in dataclasses.fields(verdict))
        if isinstance(value, str)
    ]
    for text in texts:
        assert KEY not in text.lower()


def test_as_key_repr_and_str_are_masked() -> None:
    """An AsKey prints as a short fingerprint, never as the key."""
    key = AsKey(KEY)
    for text in (repr(key), str(key), f"{key}", f"{[key]}"):
        assert KEY not in text
        assert key.fingerprint in text
    assert len(key.fingerprint) == 8
    assert key.reveal() == KEY


def test_as_keys_compare_by_value() -> None:
    """Two AsKey objects holding the same text are equal and hash alike; case matters."""
    assert AsKey(KEY) == AsKey(KEY)
    assert hash(AsKey(KEY)) == hash(AsKey(KEY))
    assert AsKey(KEY) != AsKey(KEY.upper())
    assert AsKey(KEY) != KEY


@pytest.mark.parametrize(
    "value",
    [KEY[:-1], KEY + "0", KEY[:-1] + "g", "", f" {KEY[1:]}"],
    ids=["31-digits", "33-digits", "non-hex", "empty", "leading-blank"],
)
def test_invalid_key_is_refused_without_echoing_it(value: str) -> None:
    """A key that is not 32 hex digits is refused and the message does not repeat it."""
    with pytest.raises(InvalidKeyError) as caught:
        AsKey(value)
    if value:
        assert value not in str(caught.value)
