"""Downlink requests: parameter validation and signing (SPEC.md §4.2, §4.3)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest

from tpas.errors import DownlinkParameterError, InputError
from tpas.protocol import (
    DOWNLINK_PATH_V1,
    DOWNLINK_PATH_V2,
    AsKey,
    DownlinkParams,
    SignedDownlink,
    format_time,
    sign_downlink,
)

KEY = AsKey("46ab678cd45df4a4e4b375Eacd096acc")
DEV_EUI = "000000000F1D8693"
TIME = "2016-01-11T14:28:00.333+02:00"


def _sign(
    params: DownlinkParams, *, as_id: str = "app1.sample.com", time: datetime | str = TIME
) -> SignedDownlink:
    return sign_downlink(params, as_id=as_id, key=KEY, time=time)


INVALID = [
    pytest.param(DownlinkParams("0F1D8693", 1, "00"), "dev_eui", id="dev-eui-short"),
    pytest.param(DownlinkParams("000000000F1D869G", 1, "00"), "dev_eui", id="dev-eui-non-hex"),
    pytest.param(DownlinkParams(DEV_EUI + "0", 1, "00"), "dev_eui", id="dev-eui-long"),
    pytest.param(DownlinkParams("", 1, "00"), "dev_eui", id="dev-eui-empty"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "0"), "payload_hex", id="payload-odd-length"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "0G"), "payload_hex", id="payload-non-hex"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "00 11"), "payload_hex", id="payload-blank"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "00" * 251), "payload_hex", id="payload-251-bytes"),
    pytest.param(DownlinkParams(DEV_EUI, 1), "payload_hex", id="payload-missing-no-flush"),
    pytest.param(DownlinkParams(DEV_EUI, 1, ""), "payload_hex", id="payload-empty-no-flush"),
    pytest.param(DownlinkParams(DEV_EUI, 0, "00"), "fport", id="fport-0"),
    pytest.param(DownlinkParams(DEV_EUI, 225, "00"), "fport", id="fport-225"),
    pytest.param(DownlinkParams(DEV_EUI, -1, "00"), "fport", id="fport-negative"),
    pytest.param(DownlinkParams(DEV_EUI, None, "00"), "fport", id="fport-missing-with-payload"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "00", fcnt_dn=-1), "fcnt_dn", id="fcnt-dn-negative"),
    pytest.param(
        DownlinkParams(DEV_EUI, 1, "00", correlation_id="4434704901C7450"),
        "correlation_id",
        id="correlation-id-short",
    ),
    pytest.param(
        DownlinkParams(DEV_EUI, 1, "00", correlation_id="4434704901C7450X"),
        "correlation_id",
        id="correlation-id-non-hex",
    ),
    pytest.param(
        DownlinkParams(DEV_EUI, 1, "00", validity_time=0), "validity_time", id="validity-zero"
    ),
    pytest.param(
        DownlinkParams(DEV_EUI, 1, "00", validity_time=-60),
        "validity_time",
        id="validity-negative",
    ),
    pytest.param(
        DownlinkParams(DEV_EUI, 1, "00", validity_time="tomorrow"),
        "validity_time",
        id="validity-not-iso",
    ),
]


@pytest.mark.parametrize(("params", "field"), INVALID)
def test_invalid_parameter_is_refused_naming_the_field(params: DownlinkParams, field: str) -> None:
    """A parameter outside ThingPark's published format raises naming that field."""
    with pytest.raises(DownlinkParameterError) as caught:
        params.validated()
    assert caught.value.field == field
    assert caught.value.reason == "invalid_downlink_parameter"
    assert str(caught.value).startswith(f"{field}: ")

    with pytest.raises(DownlinkParameterError) as signing:
        _sign(params)
    assert signing.value.field == field


NAIVE = datetime(2016, 1, 11, 14, 28)  # noqa: DTZ001 - naive on purpose
INVALID_SIGNING = [
    pytest.param("app1.sample.com", NAIVE, "time", id="naive-datetime"),
    pytest.param("app1.sample.com", "2016-01-11 at noon", "time", id="time-text-not-iso"),
    pytest.param("app1.sample.com", "", "time", id="time-empty"),
    pytest.param("app one", TIME, "as_id", id="as-id-blank"),
    pytest.param("app/1", TIME, "as_id", id="as-id-slash"),
    pytest.param("", TIME, "as_id", id="as-id-empty"),
]


@pytest.mark.parametrize(("as_id", "time", "field"), INVALID_SIGNING)
def test_invalid_signing_input_is_refused(as_id: str, time: datetime | str, field: str) -> None:
    """A naive or malformed time, or an AS_ID outside [0-9A-Za-z-._], is refused by field."""
    with pytest.raises(DownlinkParameterError) as caught:
        _sign(DownlinkParams(DEV_EUI, 1, "00"), as_id=as_id, time=time)
    assert caught.value.field == field
    assert isinstance(caught.value, InputError)


def test_format_time_needs_an_offset() -> None:
    """format_time refuses a naive datetime and writes milliseconds with the offset."""
    with pytest.raises(DownlinkParameterError):
        format_time(NAIVE)
    assert format_time(datetime(2016, 1, 11, 12, 28, tzinfo=UTC)) == (
        "2016-01-11T12:28:00.000+00:00"
    )


VALID = [
    pytest.param(DownlinkParams(DEV_EUI, 1, "00"), id="minimal"),
    pytest.param(DownlinkParams(DEV_EUI, 224, "00" * 250), id="fport-224-payload-250-bytes"),
    pytest.param(DownlinkParams(DEV_EUI, flush_queue=True), id="flush-without-payload"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "00", fcnt_dn=0), id="fcnt-dn-zero"),
    pytest.param(DownlinkParams(DEV_EUI, 1, "00", validity_time=1), id="validity-seconds"),
    pytest.param(
        DownlinkParams(DEV_EUI, 1, "00", validity_time="2016-01-11T15:28:00+02:00"),
        id="validity-iso",
    ),
]


@pytest.mark.parametrize("params", VALID)
def test_valid_parameters_sign(params: DownlinkParams) -> None:
    """Parameters at the edges of the published ranges are accepted and signed."""
    signed = _sign(params)
    assert signed.token == hashlib.sha256((signed.hashed + KEY.reveal()).encode()).hexdigest()


def test_hex_is_upper_cased() -> None:
    """DevEUI, payload and CorrelationID are sent upper-case, as the OpenAPI patterns require."""
    params = DownlinkParams(
        "000000000f1d8693", 1, "abcdef", correlation_id="4434704901c7450b"
    ).validated()
    assert (params.dev_eui, params.payload_hex, params.correlation_id) == (
        DEV_EUI,
        "ABCDEF",
        "4434704901C7450B",
    )


def test_every_optional_parameter_is_in_the_documented_order() -> None:
    """With every option set, parameters follow Actility's order and Token comes last."""
    params = DownlinkParams(
        dev_eui=DEV_EUI,
        fport=2,
        payload_hex="0a0b",
        confirmed=True,
        flush_queue=True,
        validity_time="2016-01-11T15:28:00.000+02:00",
        fcnt_dn=7,
        correlation_id="4434704901C7450B",
    )

    signed = _sign(params)

    names = [part.partition("=")[0] for part in signed.query.split("&")]
    assert names == [
        "DevEUI",
        "FPort",
        "Payload",
        "FCntDn",
        "Confirmed",
        "FlushDownlinkQueue",
        "ValidityTime",
        "AS_ID",
        "Time",
        "CorrelationID",
        "Token",
    ]
    assert signed.hashed == (
        "DevEUI=000000000F1D8693&FPort=2&Payload=0A0B&FCntDn=7&Confirmed=1"
        "&FlushDownlinkQueue=1&ValidityTime=2016-01-11T15:28:00.000+02:00"
        "&AS_ID=app1.sample.com&Time=2016-01-11T14:28:00.333+02:00"
        "&CorrelationID=4434704901C7450B"
    )
    assert signed.query == (
        "DevEUI=000000000F1D8693&FPort=2&Payload=0A0B&FCntDn=7&Confirmed=1"
        "&FlushDownlinkQueue=1&ValidityTime=2016-01-11T15%3A28%3A00.000%2B02%3A00"
        "&AS_ID=app1.sample.com&Time=2016-01-11T14%3A28%3A00.333%2B02%3A00"
        f"&CorrelationID=4434704901C7450B&Token={signed.token}"
    )


def test_unset_options_are_left_out() -> None:
    """Options not asked for (Confirmed, Flush, FCntDn, ...) do not appear in the query."""
    signed = _sign(DownlinkParams(DEV_EUI, flush_queue=True))
    names = [part.partition("=")[0] for part in signed.query.split("&")]
    assert names == ["DevEUI", "FlushDownlinkQueue", "AS_ID", "Time", "Token"]


def test_time_is_percent_encoded_and_hashed_decoded() -> None:
    """Time travels as %3A/%2B in the query but is hashed with ':' and '+' (SPEC.md §9.11)."""
    moment = datetime(2016, 1, 11, 14, 28, 0, 333000, tzinfo=timezone(timedelta(hours=2)))
    signed = _sign(DownlinkParams(DEV_EUI, 1, "00"), time=moment)
    assert "Time=2016-01-11T14%3A28%3A00.333%2B02%3A00&" in signed.query
    assert "+" not in signed.query
    assert "Time=2016-01-11T14:28:00.333+02:00" in signed.hashed
    assert unquote(signed.query.rpartition("&Token=")[0]) == signed.hashed


def test_signed_downlink_never_holds_the_key() -> None:
    """Neither the query nor the hashed text nor the repr of a signed downlink holds the key."""
    signed = _sign(DownlinkParams(DEV_EUI, 1, "00"))
    for text in (signed.query, signed.hashed, repr(signed)):
        assert KEY.reveal().lower() not in text.lower()


def test_downlink_paths_are_the_published_endpoints() -> None:
    """The v1 and v2 downlink paths are ThingPark's published endpoints (SPEC.md §4.1)."""
    assert DOWNLINK_PATH_V1 == "/thingpark/lrc/rest/downlink"
    assert DOWNLINK_PATH_V2 == "/thingpark/lrc/rest/v2/downlink"
