"""``tpas token check`` and ``tpas token sign-downlink``, run as a real process."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

import pytest

from tpas.protocol import BodyFormat, Document, DownlinkSent, Location, Uplink, encode

if TYPE_CHECKING:
    from tests.cli.conftest import RunTpas

FIXTURES: Final = Path(__file__).parents[1] / "fixtures"
VECTORS: Final[dict[str, dict[str, Any]]] = {
    v["id"]: v for v in json.loads((FIXTURES / "token_test_vectors.json").read_text())["vectors"]
}
MASK: Final = "*" * 32

# Published bodies for the vectors that come with one (fixtures/SOURCES.md).
BODY_FILES: Final = {
    "UL-1": "uplink_frame.json",
    "UL-3": "uplink_frame_2.json",
    "UL-4": "uplink_frame_3.json",
    "UL-5": "uplink_frame_4.json",
}
# For the others, a minimal body whose recipe elements concatenate to the vector's.
BUILT_BODIES: Final[dict[str, Document]] = {
    "UL-2": Uplink(
        customer_id="100000507",
        dev_eui="000000000F1D8693",
        fport=2,
        fcnt_up=7011,
        payload_hex="0027bd00",
    ),
    "UL-6": Uplink(
        customer_id="100000001",
        dev_eui="0059AC0000000001",
        fport=1,
        fcnt_up=1,  # "...0001" + "1" + "1" + "000102030405": FCntUp is 1
        payload_hex="000102030405",
    ),
    "LOC-1": Location(customer_id="100000001", dev_eui="0059AC0000000001"),
    "DLS-1": DownlinkSent(customer_id="100000001", dev_eui="0059AC0000000001", fport=1, fcnt_dn=1),
}


def _encoded(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in pairs)


def _pairs(decoded: str) -> list[tuple[str, str]]:
    return [(name, value) for name, _, value in (p.partition("=") for p in decoded.split("&"))]


def _raw_query(vector: dict[str, Any]) -> str:
    """The query as the network server would send it for this vector."""
    if vector["id"] == "UL-4":
        # A name:value list; the raw query percent-encodes Time as ThingPark does.
        lines = (FIXTURES / "uplink_frame_3_query.txt").read_text().splitlines()
        return _encoded([(n, v) for n, _, v in (s.strip().partition(":") for s in lines if s)])
    if vector["id"] == "UL-5":
        return (FIXTURES / "uplink_frame_4_query.txt").read_text().strip()
    if "raw_query_as_published" in vector:
        return str(vector["raw_query_as_published"])
    pairs = _pairs(vector["query_parameters_decoded"])
    return _encoded([*pairs, ("Token", vector["expected_token"])])


def _labelled(text: str) -> dict[str, str]:
    """The ``label: value`` lines of the human output."""
    return {
        label.strip(): value.strip()
        for label, _, value in (line.partition(":") for line in text.splitlines())
    }


def _check_args(vector_id: str, body: Path, *extra: str) -> list[str]:
    vector = VECTORS[vector_id]
    return [
        "token",
        "check",
        str(body),
        "--query",
        _raw_query(vector),
        "--key",
        vector["as_key"],
        *extra,
    ]


def _as_id(vector_id: str) -> str:
    return dict(_pairs(VECTORS[vector_id]["query_parameters_decoded"]))["AS_ID"]


def _assert_verifies(vector_id: str, body: Path, report_type: str, tpas: RunTpas) -> None:
    vector = VECTORS[vector_id]
    run = tpas(*_check_args(vector_id, body, "--as-id", _as_id(vector_id)))
    assert (run.code, run.err) == (0, "")
    shown = _labelled(run.out)
    assert shown["verdict"] == "VALID"
    assert shown["reason"] == "-"
    assert shown["explanation"] == "token matches"
    assert shown["matched key"] == "index 0 (--key #1 of 1), as given"
    assert shown["report type"] == report_type
    assert shown["body elements"] == vector["body_elements"]
    assert shown["query string"] == vector["query_parameters_decoded"]
    assert shown["hashed input"] == vector["sha256_input"].removesuffix(vector["as_key"]) + MASK
    assert not run.reveals(vector["as_key"])


@pytest.mark.parametrize("vector_id", sorted(BODY_FILES), ids=str)
def test_published_vector_verifies(vector_id: str, tpas: RunTpas) -> None:
    """Every vector with a published body verifies and shows exactly what was hashed."""
    _assert_verifies(vector_id, FIXTURES / BODY_FILES[vector_id], "DevEUI_uplink", tpas)


@pytest.mark.parametrize("fmt", list(BodyFormat), ids=str)
@pytest.mark.parametrize("vector_id", sorted(BUILT_BODIES), ids=str)
def test_built_vector_verifies(
    vector_id: str, fmt: BodyFormat, tpas: RunTpas, tmp_path: Path
) -> None:
    """Every vector without a published body verifies from a minimal body in each format."""
    body = tmp_path / f"{vector_id}.{fmt}"
    body.write_bytes(encode(BUILT_BODIES[vector_id], fmt))
    _assert_verifies(vector_id, body, BUILT_BODIES[vector_id].ROOT, tpas)


def test_json_output_carries_the_same_facts(tpas: RunTpas) -> None:
    """--json prints the verdict, reason, matched key, report type and hashed texts."""
    vector = VECTORS["UL-1"]
    other = "00112233445566778899aabbccddeeff"
    run = tpas(*_check_args("UL-1", FIXTURES / "uplink_frame.json", "--key", other, "--json"))
    assert run.code == 0
    # The first --key (the right one) matches: index 0.
    assert json.loads(run.out) == {
        "valid": True,
        "verdict": "VALID",
        "reason": None,
        "explanation": "token matches",
        "key_index": 0,
        "key_lowercased": False,
        "keys_tried": 2,
        "report_type": "DevEUI_uplink",
        "body_format": "json",
        "recipe": "CustomerID + DevEUI + FPort|0 + FCntUp + payload_hex",
        "body_elements": vector["body_elements"],
        "query_string": vector["query_parameters_decoded"],
        "hashed_input": vector["sha256_input"].removesuffix(vector["as_key"]) + MASK,
        "query_time": "2016-01-11T14:11:11.333+02:00",
    }
    assert not run.reveals(vector["as_key"])
    assert not run.reveals(other)


def test_later_key_matches(tpas: RunTpas) -> None:
    """With several keys, the index of the one that reproduces the token is reported."""
    vector = VECTORS["UL-1"]
    wrong = "ffeeddccbbaa99887766554433221100"
    run = tpas(
        "token",
        "check",
        str(FIXTURES / "uplink_frame.json"),
        "--query",
        _raw_query(vector),
        "--key",
        wrong,
        "--key",
        vector["as_key"],
    )
    assert run.code == 0
    assert _labelled(run.out)["matched key"] == "index 1 (--key #2 of 2), as given"
    assert not run.reveals(vector["as_key"])
    assert not run.reveals(wrong)


def test_key_matching_only_lower_cased_is_reported(tpas: RunTpas) -> None:
    """A key given in upper case that matches only once lower-cased is flagged as such."""
    vector = VECTORS["UL-3"]
    upper = vector["as_key"].upper()
    body = FIXTURES / "uplink_frame_2.json"
    run = tpas("token", "check", str(body), "--query", _raw_query(vector), "--key", upper)
    assert run.code == 0
    assert _labelled(run.out)["matched key"] == "index 0 (--key #1 of 1), only once lower-cased"
    assert not run.reveals(upper)


def _check_json(tpas: RunTpas, query: str, *extra: str) -> tuple[int, dict[str, Any]]:
    vector = VECTORS["UL-1"]
    body = FIXTURES / "uplink_frame.json"
    run = tpas("token", "check", str(body), "--query", query, "--key", vector["as_key"], *extra)
    assert run.err == ""
    assert not run.reveals(vector["as_key"])
    json_run = tpas(
        "token", "check", str(body), "--query", query, "--key", vector["as_key"], "--json", *extra
    )
    assert json_run.code == run.code
    assert not json_run.reveals(vector["as_key"])
    shown = json.loads(json_run.out)
    assert _labelled(run.out)["verdict"] == shown["verdict"]
    assert _labelled(run.out)["reason"] == (shown["reason"] or "-")
    return run.code, shown


UL1_QUERY: Final = str(VECTORS["UL-1"]["raw_query_as_published"])


@pytest.mark.parametrize(
    ("query", "extra", "reason"),
    [
        pytest.param(UL1_QUERY[:-1] + "0", [], "token_mismatch", id="tampered-token"),
        pytest.param(UL1_QUERY, ["--max-drift", "60"], "stale_time", id="stale-time"),
        pytest.param(UL1_QUERY, ["--as-id", "someone.else"], "bad_as_id", id="foreign-as-id"),
        pytest.param(UL1_QUERY.partition("&Token")[0], [], "missing_parameter", id="no-token"),
        pytest.param(
            UL1_QUERY.replace("LrnFPort=2", "LrnFPort=3"), [], "body_query_mismatch", id="fport"
        ),
    ],
)
def test_invalid_token_exits_1_with_reason(
    query: str, extra: list[str], reason: str, tpas: RunTpas
) -> None:
    """A report that fails verification exits 1 and names the reason code."""
    code, shown = _check_json(tpas, query, *extra)
    assert code == 1
    assert shown["verdict"] == "INVALID"
    assert shown["reason"] == reason
    assert shown["key_index"] is None
    assert shown["body_elements"] == VECTORS["UL-1"]["body_elements"]


def test_fresh_time_passes_the_drift_check(tpas: RunTpas, tmp_path: Path) -> None:
    """A query Time within --max-drift of now passes the freshness check."""
    key = VECTORS["UL-6"]["as_key"]
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    pairs = [
        (n, now if n == "Time" else v)
        for n, v in _pairs(VECTORS["UL-6"]["query_parameters_decoded"])
    ]
    body = tmp_path / "body.json"
    body.write_bytes(encode(BUILT_BODIES["UL-6"], BodyFormat.JSON))
    hashed = VECTORS["UL-6"]["body_elements"] + "&".join(f"{n}={v}" for n, v in pairs) + key
    token = hashlib.sha256(hashed.encode()).hexdigest()
    query = _encoded([*pairs, ("Token", token)])
    run = tpas("token", "check", str(body), "--query", query, "--key", key, "--max-drift", "300")
    assert run.code == 0
    assert _labelled(run.out)["verdict"] == "VALID"


def test_body_from_stdin_and_query_as_url(tpas: RunTpas) -> None:
    """BODY_FILE ``-`` reads stdin, and --query accepts the whole request URL."""
    vector = VECTORS["UL-1"]
    url = f"https://as.example.com/thingpark/uplink?{UL1_QUERY}"
    body = (FIXTURES / "uplink_frame.json").read_bytes()
    run = tpas("token", "check", "-", "--query", url, "--key", vector["as_key"], stdin=body)
    assert run.code == 0
    assert _labelled(run.out)["verdict"] == "VALID"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["missing.json"], "tpas: cannot read missing.json: No such file", id="missing"
        ),
        pytest.param(["BODY", "--format", "xml"], "tpas: not well-formed XML", id="wrong-format"),
        pytest.param(["BODY", "--max-drift", "-1"], "tpas: --max-drift: ", id="negative-drift"),
    ],
)
def test_unusable_check_input_exits_2(args: list[str], message: str, tpas: RunTpas) -> None:
    """An unreadable body or bad option exits 2 with one line on stderr, no traceback."""
    key = VECTORS["UL-1"]["as_key"]
    args = [str(FIXTURES / "uplink_frame.json") if a == "BODY" else a for a in args]
    run = tpas("token", "check", args[0], "--query", UL1_QUERY, "--key", key, *args[1:])
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith(message)
    assert run.err.count("\n") == 1
    assert "Traceback" not in run.err
    assert not run.reveals(key)


@pytest.mark.parametrize(
    ("keys", "label"),
    [
        pytest.param(["46ab678cd45df4a4e4b375Eacd096ac"], "--key", id="too-short"),
        pytest.param(["46ab678cd45df4a4e4b375Eacd096accc"], "--key", id="too-long"),
        pytest.param(["46ab678cd45df4a4e4b375Eacd096acz"], "--key", id="not-hex"),
        pytest.param(
            ["46ab678cd45df4a4e4b375Eacd096acc", "46ab678cd45df4a4e4b375Eacd09"],
            "--key #2",
            id="second-of-two",
        ),
    ],
)
def test_bad_key_is_named_not_repeated(keys: list[str], label: str, tpas: RunTpas) -> None:
    """A malformed key exits 2 naming which --key is wrong, never repeating any key."""
    key_args = [arg for key in keys for arg in ("--key", key)]
    body = str(FIXTURES / "uplink_frame.json")
    run = tpas("token", "check", body, "--query", UL1_QUERY, *key_args)
    assert run.code == 2
    assert run.err.startswith(f"tpas: {label}: an AS key must be 32 hex digits")
    assert "Traceback" not in run.err
    for key in keys:
        assert not run.reveals(key)


DL_OPTIONS: Final = {"DevEUI": "--dev-eui", "FPort": "--fport", "Payload": "--payload"}


@pytest.mark.parametrize("vector_id", ["DL-1", "DL-2"], ids=str)
def test_downlink_vector_is_signed(vector_id: str, tpas: RunTpas) -> None:
    """sign-downlink reproduces the published downlink vectors byte for byte."""
    vector = VECTORS[vector_id]
    params = dict(_pairs(vector["query_parameters_decoded"]))
    run = tpas(
        "token",
        "sign-downlink",
        *(arg for name, option in DL_OPTIONS.items() for arg in (option, params[name])),
        "--as-id",
        params["AS_ID"],
        "--time",
        params["Time"],
        "--key",
        vector["as_key"],
    )
    expected = vector.get("raw_query_as_published") or _encoded(
        [*_pairs(vector["query_parameters_decoded"]), ("Token", vector["expected_token"])]
    )
    assert (run.code, run.out, run.err) == (0, f"{expected}\n", "")
    assert not run.reveals(vector["as_key"])


SIGN_BASE: Final = [
    "token",
    "sign-downlink",
    "--dev-eui",
    "000000000f1d8693",
    "--fport",
    "1",
    "--payload",
    "00",
    "--as-id",
    "app1.sample.com",
    "--key",
    VECTORS["DL-1"]["as_key"],
]


def _decoded(query: str) -> list[tuple[str, str]]:
    return [(n, unquote(v)) for n, _, v in (p.partition("=") for p in query.split("&"))]


def test_default_time_is_now_in_utc(tpas: RunTpas) -> None:
    """Without --time the Time parameter is the current UTC time, and the token covers it."""
    before = datetime.now(UTC)
    run = tpas(*SIGN_BASE)
    assert run.code == 0
    pairs = _decoded(run.out.strip())
    values = dict(pairs)
    sent = datetime.fromisoformat(values["Time"])
    assert values["Time"].endswith("+00:00")
    assert before - timedelta(seconds=1) <= sent <= datetime.now(UTC) + timedelta(seconds=1)
    hashed = "&".join(f"{n}={v}" for n, v in pairs[:-1]) + VECTORS["DL-1"]["as_key"]
    assert pairs[-1] == ("Token", hashlib.sha256(hashed.encode()).hexdigest())
    assert values["DevEUI"] == "000000000F1D8693"


def test_optional_parameters_in_actilitys_order(tpas: RunTpas) -> None:
    """Every optional parameter is sent, in Actility's order, with Token last."""
    run = tpas(
        *SIGN_BASE,
        "--time",
        "2016-01-11T14:28:00.333+02:00",
        "--confirmed",
        "--flush-queue",
        "--validity-time",
        "3600",
        "--fcnt-dn",
        "7",
        "--correlation-id",
        "00112233aabbccdd",
    )
    assert run.code == 0
    names = [name for name, _ in _decoded(run.out.strip())]
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
    assert dict(_decoded(run.out.strip()))["CorrelationID"] == "00112233AABBCCDD"


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        pytest.param([], "/thingpark/lrc/rest/downlink", id="v1"),
        pytest.param(["--v2"], "/thingpark/lrc/rest/v2/downlink", id="v2"),
    ],
)
def test_url_and_json_output(extra: list[str], path: str, tpas: RunTpas) -> None:
    """--url prints the full request URL; --json adds the token and the masked hash input."""
    vector = VECTORS["DL-1"]
    time = ["--time", "2016-01-11T14:28:00.333+02:00"]
    url = ["--url", "https://api.thingpark.com/"]
    run = tpas(*SIGN_BASE, *time, *url, *extra)
    expected = f"https://api.thingpark.com{path}?{vector['raw_query_as_published']}"
    assert (run.code, run.out) == (0, f"{expected}\n")
    shown = json.loads(tpas(*SIGN_BASE, *time, *url, *extra, "--json").out)
    assert shown == {
        "query": vector["raw_query_as_published"],
        "url": expected,
        "token": vector["expected_token"],
        "hashed_input": vector["sha256_input"].removesuffix(vector["as_key"]) + MASK,
    }
    assert not run.reveals(vector["as_key"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"--dev-eui": "000000000F1D869"}, "--dev-eui: must be 16 hex", id="deveui"),
        pytest.param({"--fport": "0"}, "--fport: must be 1 to 224", id="fport-0"),
        pytest.param({"--fport": "225"}, "--fport: must be 1 to 224", id="fport-225"),
        pytest.param({"--payload": "0"}, "--payload: must be 1 to 250 bytes", id="odd-payload"),
        pytest.param({"--payload": "zz"}, "--payload: must be 1 to 250 bytes", id="not-hex"),
        pytest.param({"--fport": None}, "--fport: is required with a payload", id="no-fport"),
        pytest.param({"--as-id": "my app"}, "--as-id: may hold only", id="as-id"),
        pytest.param({"--time": "yesterday"}, "--time: must be an ISO-8601 time", id="time"),
        pytest.param({"--fcnt-dn": "-1"}, "--fcnt-dn: must be 0 or more", id="fcnt-dn"),
        pytest.param({"--correlation-id": "12"}, "--correlation-id: must be 16", id="corr-id"),
        pytest.param({"--validity-time": "soon"}, "--validity-time: must be an", id="validity"),
        pytest.param({"--key": "46ab678cd45df4a4e4b375Eacd096ac"}, "--key: an AS key", id="key"),
        pytest.param({"--url": "api.thingpark.com"}, "--url: expected a base", id="url"),
        pytest.param({"--v2": ""}, "--v2: only meaningful with --url", id="v2-no-url"),
    ],
)
def test_bad_downlink_parameter_exits_2(
    change: dict[str, str | None], message: str, tpas: RunTpas
) -> None:
    """A downlink parameter outside SPEC.md §4.2 exits 2 naming the option, no traceback."""
    args = dict(zip(SIGN_BASE[2::2], SIGN_BASE[3::2], strict=True))
    args.update(change)
    argv = [part for o, v in args.items() if v is not None for part in (o, v) if part]
    run = tpas("token", "sign-downlink", *argv)
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith(f"tpas: {message}")
    assert run.err.count("\n") == 1
    assert "Traceback" not in run.err
    assert not run.reveals(VECTORS["DL-1"]["as_key"])
    assert not run.reveals(str(args["--key"]))
