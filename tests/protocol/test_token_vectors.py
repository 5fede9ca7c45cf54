"""Every known-answer token vector (SPEC.md §3.4) reproduced through the library."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tpas.protocol import (
    DEFAULT_RECIPES,
    AsKey,
    BodyFormat,
    Document,
    DownlinkParams,
    DownlinkSent,
    Location,
    Reason,
    Uplink,
    body_elements,
    compute_token,
    encode,
    parse,
    sign_downlink,
    verify_report,
)

ALL_VECTOR_IDS = ("UL-1", "UL-2", "UL-3", "UL-4", "UL-5", "UL-6", "LOC-1", "DLS-1", "DL-1", "DL-2")


def _encoded(decoded: str) -> str:
    """Percent-encode each value of ``name=value&...`` the way Actility's example does."""
    pairs = (part.partition("=") for part in decoded.split("&"))
    return "&".join(f"{name}={quote(value, safe='')}" for name, _, value in pairs)


def _signed_query(vector: dict[str, Any], *, encoded: bool = True) -> str:
    """The vector's query parameters followed by its expected Token."""
    decoded: str = vector["query_parameters_decoded"]
    query = _encoded(decoded) if encoded else decoded
    return f"{query}&Token={vector['expected_token']}"


def _name_value_list_query(text: str) -> str:
    """A raw query from a captured ``Name:value`` list (one per line, trailing blanks)."""
    pairs = (line.strip().partition(":") for line in text.splitlines() if line.strip())
    return "&".join(f"{name}={value}" for name, _, value in pairs)


def _published_query(vector_id: str, vector: dict[str, Any], fixtures_dir: Path) -> str:
    """The query as its source published it, or the decoded one with the Token appended."""
    if vector_id == "UL-4":
        return _name_value_list_query(
            (fixtures_dir / "uplink_frame_3_query.txt").read_text(encoding="utf-8")
        )
    if vector_id == "UL-5":
        return (fixtures_dir / "uplink_frame_4_query.txt").read_text(encoding="utf-8").strip()
    if "raw_query_as_published" in vector:
        published: str = vector["raw_query_as_published"]
        return published
    return _signed_query(vector)


def test_the_vector_table_is_fully_covered(vectors: dict[str, dict[str, Any]]) -> None:
    """The vector file holds exactly the vectors this module reproduces, so none is skipped."""
    assert sorted(vectors) == sorted(ALL_VECTOR_IDS)


@pytest.mark.parametrize("vector_id", ALL_VECTOR_IDS, ids=ALL_VECTOR_IDS)
def test_compute_token_reproduces_the_vector(
    vectors: dict[str, dict[str, Any]], vector_id: str
) -> None:
    """compute_token over body elements, decoded query and key gives the expected token."""
    vector = vectors[vector_id]
    token = compute_token(
        vector["body_elements"], vector["query_parameters_decoded"], vector["as_key"]
    )
    assert token == vector["expected_token"]
    assert hashlib.sha256(vector["sha256_input"].encode()).hexdigest() == token


@pytest.mark.parametrize(
    ("vector_id", "body_file"),
    [
        pytest.param("UL-1", "uplink_frame.json", id="UL-1-untyped-json"),
        pytest.param("UL-1", "uplink_frame.xml", id="UL-1-xml"),
        pytest.param("UL-3", "uplink_frame_2.json", id="UL-3-typed-json"),
        pytest.param("UL-4", "uplink_frame_3.json", id="UL-4-captured-untyped-json"),
        pytest.param("UL-5", "uplink_frame_4.json", id="UL-5-out-of-order-query"),
    ],
)
def test_published_body_and_query_verify(
    vectors: dict[str, dict[str, Any]], fixtures_dir: Path, vector_id: str, body_file: str
) -> None:
    """A published body with its published query verifies, hashing the vector's exact text."""
    vector = vectors[vector_id]
    doc = parse((fixtures_dir / body_file).read_bytes())
    query = _published_query(vector_id, vector, fixtures_dir)

    verdict = verify_report(doc, query, [AsKey(vector["as_key"])])

    assert verdict.ok, verdict.detail
    assert verdict.reason is None
    assert verdict.key_index == 0
    assert verdict.key_lowercased is False
    assert verdict.body_elements == vector["body_elements"]
    assert verdict.query_string == vector["query_parameters_decoded"]
    assert body_elements(DEFAULT_RECIPES[doc.root], doc.fields) == vector["body_elements"]


def test_ul4_query_is_the_captured_list(
    vectors: dict[str, dict[str, Any]], fixtures_dir: Path
) -> None:
    """The captured name:value list of UL-4 rebuilds the vector's decoded query and token."""
    vector = vectors["UL-4"]
    text = (fixtures_dir / "uplink_frame_3_query.txt").read_text(encoding="utf-8")
    expected = f"{vector['query_parameters_decoded']}&Token={vector['expected_token']}"
    assert _name_value_list_query(text) == expected


def test_ul5_published_query_is_out_of_canonical_order(fixtures_dir: Path) -> None:
    """UL-5's raw query really lists its parameters out of the hashing order."""
    raw = (fixtures_dir / "uplink_frame_4_query.txt").read_text(encoding="utf-8").strip()
    names = [part.partition("=")[0] for part in raw.split("&")]
    assert names == ["AS_ID", "LrnFPort", "Time", "Token", "LrnDevEui", "LrnInfos"]


_UL_2 = Uplink(
    customer_id="100000507",
    dev_eui="000000000F1D8693",
    fport=2,
    fcnt_up=7011,
    payload_hex="0027bd00",
    time="2016-01-11T14:11:10.000+02:00",
)
# "...0001" + "1" + "1" + "000102030405": FPort 1 and FCntUp 1 (not 11).
_UL_6 = Uplink(
    customer_id="100000001",
    dev_eui="0059AC0000000001",
    fport=1,
    fcnt_up=1,
    payload_hex="000102030405",
)
# The body carries the DevEUI upper-case; the location recipe hashes it lower-cased.
_LOC_1 = Location(customer_id="100000001", dev_eui="0059AC0000000001", dev_lat=52.0)
_DLS_1 = DownlinkSent(
    customer_id="100000001", dev_eui="0059AC0000000001", fport=1, fcnt_dn=1, delivery_status=1
)

BUILT = [pytest.param("UL-2", _UL_2, fmt, id=f"UL-2-{fmt.value}") for fmt in BodyFormat] + [
    pytest.param(vector_id, model, fmt, id=f"{vector_id}-{fmt.value}")
    for vector_id, model in (("UL-6", _UL_6), ("LOC-1", _LOC_1), ("DLS-1", _DLS_1))
    for fmt in BodyFormat
]


@pytest.mark.parametrize(("vector_id", "model", "fmt"), BUILT)
def test_built_body_verifies(
    vectors: dict[str, dict[str, Any]], vector_id: str, model: Document, fmt: BodyFormat
) -> None:
    """A body encoded from a model, in each format, hashes to the vector's body elements."""
    vector = vectors[vector_id]
    doc = parse(encode(model, fmt))
    assert doc.format is (BodyFormat.XML if fmt is BodyFormat.XML else BodyFormat.JSON)
    assert body_elements(DEFAULT_RECIPES[model.ROOT], doc.fields) == vector["body_elements"]

    verdict = verify_report(doc, _signed_query(vector), [AsKey(vector["as_key"])])

    assert verdict.ok, verdict.detail
    assert verdict.key_lowercased is False
    assert verdict.body_elements == vector["body_elements"]
    assert verdict.query_string == vector["query_parameters_decoded"]


def test_loc1_body_dev_eui_is_upper_case_but_hashed_lower_case(
    vectors: dict[str, dict[str, Any]],
) -> None:
    """LOC-1's body keeps DevEUI upper-case while its body elements use it lower-cased."""
    doc = parse(encode(_LOC_1, BodyFormat.JSON))
    assert doc.fields["DevEUI"] == "0059AC0000000001"
    assert vectors["LOC-1"]["body_elements"].endswith("0059ac0000000001")


def test_key_matching_only_lower_cased_is_flagged(vectors: dict[str, dict[str, Any]]) -> None:
    """A key configured upper-case that only verifies lower-cased reports key_lowercased."""
    vector = vectors["UL-6"]
    doc = parse(encode(_UL_6, BodyFormat.JSON))
    key = AsKey(vector["as_key"].upper())

    verdict = verify_report(doc, _signed_query(vector), [key])

    assert verdict.ok
    assert verdict.key_index == 0
    assert verdict.key_lowercased is True


def test_ul1_does_not_verify_with_its_key_lower_cased(
    vectors: dict[str, dict[str, Any]], fixtures_dir: Path
) -> None:
    """UL-1's key has a capital E that must be kept: lower-cased, the token does not match."""
    vector = vectors["UL-1"]
    doc = parse((fixtures_dir / "uplink_frame.json").read_bytes())

    verdict = verify_report(
        doc, vector["raw_query_as_published"], [AsKey(vector["as_key"].lower())]
    )

    assert not verdict.ok
    assert verdict.reason is Reason.TOKEN_MISMATCH


def test_ul1_token_is_over_the_decoded_query(vectors: dict[str, dict[str, Any]]) -> None:
    """Hashing the still-encoded query (%3A, %2B) does not give UL-1's token (SPEC.md §9.1)."""
    vector = vectors["UL-1"]
    encoded = _encoded(vector["query_parameters_decoded"])
    assert "%2B" in encoded
    assert (
        compute_token(vector["body_elements"], encoded, vector["as_key"])
        != (vector["expected_token"])
    )


def _reorder(query: str, order: list[str]) -> str:
    parts = {part.partition("=")[0]: part for part in query.split("&")}
    return "&".join(parts[name] for name in order)


_UL1_RAW = (
    "LrnDevEui=000000000F1D8693&LrnFPort=2&LrnInfos=UPHTTP_LAB_LORA&AS_ID=app1.sample.com"
    "&Time=2016-01-11T14:11:11.333+02:00"
    "&Token=fd0b0b00464aa798a59282d64eaa70813e33bff87682880db49638569d096aad"
)
_ORDERS = {
    "reversed": ["Token", "Time", "AS_ID", "LrnInfos", "LrnFPort", "LrnDevEui"],
    "token-first": ["Token", "LrnDevEui", "LrnFPort", "LrnInfos", "AS_ID", "Time"],
    "ul5-order": ["AS_ID", "LrnFPort", "Time", "Token", "LrnDevEui", "LrnInfos"],
}
QUERY_RENDERINGS = [
    pytest.param(_UL1_RAW, id="plus-and-colon-raw"),
    pytest.param(_UL1_RAW.replace("+", "%2B"), id="plus-as-%2B"),
    pytest.param(_UL1_RAW.replace(":", "%3A").replace("+", "%2B"), id="all-encoded"),
    pytest.param(_UL1_RAW.replace(":", "%3a").replace("+", "%2b"), id="lower-case-escapes"),
    pytest.param(_UL1_RAW.replace("A", "%41", 1), id="encoded-letter-in-value"),
    *(pytest.param(_reorder(_UL1_RAW, order), id=name) for name, order in _ORDERS.items()),
]


@pytest.mark.parametrize("query", QUERY_RENDERINGS)
def test_query_renderings_verify(fixtures_dir: Path, query: str) -> None:
    """The '+' of Time raw or as %2B, any escaping and any parameter order verify (SEC-3)."""
    doc = parse((fixtures_dir / "uplink_frame.json").read_bytes())

    verdict = verify_report(doc, query, [AsKey("46ab678cd45df4a4e4b375Eacd096acc")])

    assert verdict.ok, verdict.detail
    assert verdict.query_string == (
        "LrnDevEui=000000000F1D8693&LrnFPort=2&LrnInfos=UPHTTP_LAB_LORA"
        "&AS_ID=app1.sample.com&Time=2016-01-11T14:11:11.333+02:00"
    )
    assert verdict.query_time == datetime(2016, 1, 11, 12, 11, 11, 333000, tzinfo=UTC)


def test_plus_read_as_a_space_does_not_verify(fixtures_dir: Path) -> None:
    """A Time whose '+' arrived as a space (%20) is refused, never silently accepted."""
    doc = parse((fixtures_dir / "uplink_frame.json").read_bytes())

    verdict = verify_report(
        doc, _UL1_RAW.replace("+", "%20"), [AsKey("46ab678cd45df4a4e4b375Eacd096acc")]
    )

    assert not verdict.ok


@pytest.mark.parametrize("vector_id", ["DL-1", "DL-2"], ids=["DL-1", "DL-2"])
def test_sign_downlink_reproduces_the_vector(
    vectors: dict[str, dict[str, Any]], vector_id: str
) -> None:
    """sign_downlink with the vector's time as text reproduces its hashed text and token."""
    vector = vectors[vector_id]
    time_text = vector["query_parameters_decoded"].rpartition("Time=")[2]

    signed = sign_downlink(
        DownlinkParams(dev_eui="000000000F1D8693", fport=1, payload_hex="00"),
        as_id="app1.sample.com",
        key=AsKey(vector["as_key"]),
        time=time_text,
    )

    assert signed.hashed == vector["query_parameters_decoded"]
    assert signed.token == vector["expected_token"]
    assert signed.query.endswith(f"&Token={vector['expected_token']}")
    if "raw_query_as_published" in vector:
        assert signed.query == vector["raw_query_as_published"]


def test_sign_downlink_with_an_aware_datetime_reproduces_dl1(
    vectors: dict[str, dict[str, Any]],
) -> None:
    """DL-1 signed from an aware datetime formats Time with milliseconds and its offset."""
    vector = vectors["DL-1"]
    moment = datetime(2016, 1, 11, 14, 28, 0, 333000, tzinfo=timezone(timedelta(hours=2)))

    signed = sign_downlink(
        DownlinkParams(dev_eui="000000000f1d8693", fport=1, payload_hex="00"),
        as_id="app1.sample.com",
        key=AsKey(vector["as_key"]),
        time=moment,
    )

    assert signed.query == vector["raw_query_as_published"]
