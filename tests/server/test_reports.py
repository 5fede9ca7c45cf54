"""End-to-end: ThingPark reports over real sockets into a real ``tpas serve``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
import pytest

from tests.server.conftest import AS_ID, KEY, OLD_KEY, Server, signed
from tpas.protocol import BodyFormat, Document, DownlinkRequest, compute_token, decode, encode
from tpas.testing import make_uplink

FIXTURES = Path(__file__).parent.parent / "fixtures"
REPORT_FILES = sorted(
    p
    for p in FIXTURES.glob("*.*")
    if p.suffix in (".json", ".xml")
    and "template" not in p.name
    and p.name != "token_test_vectors.json"
    and not isinstance(decode(p.read_bytes()), DownlinkRequest)
)
FORMATS = list(BodyFormat)


def _unique(model: Document, salt: int) -> Document:
    """The same report with its own Time, so it is a distinct frame."""
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=salt)
    return msgspec.structs.replace(model, time=moment.isoformat(timespec="milliseconds"))


def _count(server: Server, **filters: str) -> int:
    rows = server.client.get("/api/messages", params={"limit": "1000", **filters}).json()
    return len(rows["items"])


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.value for f in FORMATS])
@pytest.mark.parametrize("path", REPORT_FILES, ids=[p.name for p in REPORT_FILES])
def test_every_report_type_is_stored_in_every_format(
    shared_server: Server, path: Path, fmt: BodyFormat
) -> None:
    """A published report of each type, signed and sent in each format, is stored and
    read back with its type, its upper-case DevEUI and every field."""
    salt = REPORT_FILES.index(path) * 10 + FORMATS.index(fmt)
    model = _unique(decode(path.read_bytes()), salt)
    answer = shared_server.post_report(signed(model, fmt))
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "stored"
    stored = shared_server.client.get(f"/api/messages/{answer.json()['id']}").json()
    assert stored["type"] == model.kind
    dev_eui = getattr(model, "dev_eui", None)
    assert stored["dev_eui"] == (dev_eui.upper() if dev_eui else None)
    assert stored["report"] == msgspec.json.decode(encode(model, BodyFormat.JSON))
    body = shared_server.client.get(f"/api/messages/{answer.json()['id']}/body")
    assert body.content == signed(model, fmt).body


def test_uplink_fields_are_exposed(server: Server) -> None:
    """An uplink's counters, payload and radio figures appear as message fields."""
    model = make_uplink("70B3D531C00027C8", fcnt_up=80, fport=3, payload_hex="abcd", gateways=2)
    answer = server.post_report(signed(model))
    message = server.client.get(f"/api/messages/{answer.json()['id']}").json()
    expected: dict[str, Any] = {
        "type": "uplink",
        "dev_eui": "70B3D531C00027C8",
        "fport": 3,
        "fcnt_up": 80,
        "payload_hex": "abcd",
        "rssi": -80.0,
        "snr": 7.5,
        "spreading_factor": 7,
    }
    assert {k: message[k] for k in expected} == expected
    assert len(message["report"]["DevEUI_uplink"]["Lrrs"]["Lrr"]) == 2


def test_a_key_from_the_rotation_list_is_accepted(server: Server) -> None:
    """A report signed with the application's second (older) key is accepted."""
    answer = server.post_report(signed(make_uplink(fcnt_up=5), key=OLD_KEY))
    assert answer.status_code == 200


def _refusals() -> list[tuple[str, dict[str, Any], int, str]]:
    # Times as offsets from the moment the test runs, not from collection: a long suite
    # would otherwise bring a "future" Time back inside the window.
    return [
        ("wrong-key", {"key": "ffffffffffffffffffffffffffffffff"}, 401, "token_mismatch"),
        ("token-digit", {"overrides": {"Token": "0" * 64}}, 401, "token_mismatch"),
        ("no-token", {"overrides": {"Token": ""}}, 401, "token_mismatch"),
        ("other-as-id", {"overrides": {"AS_ID": "someone.else"}}, 403, "bad_as_id"),
        ("stale", {"time": -timedelta(minutes=10)}, 401, "stale_time"),
        ("future", {"time": timedelta(minutes=10)}, 401, "future_time"),
        ("bad-time", {"overrides": {"Time": "yesterday"}}, 401, "malformed_time"),
        ("lrn-dev-eui", {"overrides": {"LrnDevEui": "0000000000000001"}}, 401,
         "body_query_mismatch"),
        ("lrn-fport", {"overrides": {"LrnFPort": "99"}}, 401, "body_query_mismatch"),
    ]  # fmt: skip


REFUSALS = _refusals()


@pytest.mark.parametrize(
    ("case", "change", "status", "reason"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_unauthenticated_reports_are_refused_and_not_stored(
    server: Server, case: str, change: dict[str, Any], status: int, reason: str
) -> None:
    """A report failing verification gets the documented status and reason, and no row."""
    if isinstance(change.get("time"), timedelta):
        change = {**change, "time": datetime.now(UTC) + change["time"]}
    answer = server.post_report(signed(make_uplink(fcnt_up=7), **change))
    assert (answer.status_code, answer.json()["error"]) == (status, reason)
    assert _count(server) == 0


def test_missing_query_parameters_are_refused(server: Server) -> None:
    """A report without a query string is refused as missing_parameter."""
    report = signed(make_uplink())
    answer = server.client.post(
        "/thingpark/farm", content=report.body, headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["error"]) == (401, "missing_parameter")


def test_unknown_application_is_404(server: Server) -> None:
    """A report for an application that is not configured is answered 404."""
    answer = server.post_report(signed(make_uplink()), application="nobody")
    assert (answer.status_code, answer.json()["error"]) == (404, "unknown_application")


def test_oversized_bodies_are_413_with_or_without_a_length(server: Server) -> None:
    """A body over the limit is refused 413, whether announced or streamed in chunks."""
    report = signed(make_uplink())
    big = report.body + b" " * (64 * 1024)
    answer = server.client.post(
        f"/thingpark/farm?{report.query}", content=big, headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["error"]) == (413, "body_too_large")

    def chunks() -> Any:
        for _ in range(70):
            yield b" " * 1024

    streamed = server.client.post(
        f"/thingpark/farm?{report.query}",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"{not json", "application/json", 400, "malformed_document"),
        (b'{"DevEUI_uplink": {"DevEUI": "XYZ"}}', "application/json", 401, "body_query_mismatch"),
        (b'{"Something": {}}', "application/json", 400, "malformed_document"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', "application/xml",
         400, "forbidden_xml"),
        (b"<DevEUI_uplink><DevEUI>", "text/xml", 400, "malformed_document"),
        (b"DevEUI=1", "application/x-www-form-urlencoded", 415, "unsupported_content_type"),
    ],
    ids=["bad-json", "bad-dev-eui", "unknown-root", "dtd", "bad-xml", "form"],
)  # fmt: skip
def test_bad_bodies_get_4xx_with_a_reason(
    server: Server, body: bytes, content_type: str, status: int, reason: str
) -> None:
    """Malformed, hostile or foreign bodies are refused with a 4xx and a reason code."""
    query = signed(make_uplink()).query
    answer = server.client.post(
        f"/thingpark/farm?{query}", content=body, headers={"Content-Type": content_type}
    )
    assert (answer.status_code, answer.json()["error"]) == (status, reason)
    assert server.client.get("/healthz").status_code == 200


def test_a_signed_report_with_a_bad_dev_eui_is_400_naming_the_field(server: Server) -> None:
    """A correctly signed report whose DevEUI is not 16 hex digits is refused 400, and the
    explanation names the field path."""
    body = b'{"DevEUI_uplink": {"CustomerID": "1", "DevEUI": "XYZ", "FPort": 1, "FCntUp": 1}}'
    values = {
        "LrnDevEui": "XYZ",
        "LrnFPort": "1",
        "LrnInfos": "x",
        "AS_ID": AS_ID,
        "Time": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    hashed = "&".join(f"{k}={v}" for k, v in values.items())
    token = compute_token("1XYZ11", hashed, KEY)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items()) + f"&Token={token}"
    answer = server.client.post(
        f"/thingpark/farm?{query}", content=body, headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "malformed_document")
    assert "DevEUI_uplink.DevEUI" in answer.json()["detail"]


def test_a_downlink_request_is_not_a_report(server: Server) -> None:
    """A DevEUI_downlink document posted to the report endpoint is refused."""
    model = decode((FIXTURES / "downlink_frame.json").read_bytes())
    answer = server.post_report(signed(model))
    assert (answer.status_code, answer.json()["error"]) == (400, "not_a_report")


def test_get_on_the_report_endpoint_is_405(server: Server) -> None:
    """Only POST is accepted on the report endpoint."""
    assert server.client.get("/thingpark/farm").status_code == 405


def test_the_same_request_twice_is_stored_once(server: Server) -> None:
    """A replayed request is answered 200 both times and stored once."""
    report = signed(make_uplink(fcnt_up=9))
    first = server.post_report(report)
    second = server.post_report(report)
    assert first.status_code == second.status_code == 200
    assert (first.json()["status"], second.json()["status"]) == ("stored", "duplicate")
    assert first.json()["id"] == second.json()["id"]
    assert _count(server) == 1


def test_the_same_frame_through_another_route_is_stored_once(server: Server) -> None:
    """The same frame signed at another moment (BLAST routing) is a duplicate."""
    model = make_uplink(fcnt_up=10)
    first = server.post_report(signed(model, time=datetime.now(UTC) - timedelta(seconds=3)))
    second = server.post_report(signed(model, BodyFormat.XML))
    assert second.json() == {**first.json(), "status": "duplicate"}
    assert _count(server) == 1


def test_content_type_charset_and_sniffing(server: Server) -> None:
    """JSON with a charset parameter, and XML sent as text/plain, are both accepted."""
    json_report = signed(make_uplink(fcnt_up=11))
    answer = server.client.post(
        f"/thingpark/farm?{json_report.query}",
        content=json_report.body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status_code == 200
    xml_report = signed(make_uplink(fcnt_up=12), BodyFormat.XML)
    answer = server.client.post(
        f"/thingpark/farm?{xml_report.query}",
        content=xml_report.body,
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status_code == 200


def test_keys_never_reach_the_logs(server: Server) -> None:
    """After accepted and refused reports, neither key nor API token is in the log."""
    server.post_report(signed(make_uplink(fcnt_up=13)))
    server.post_report(signed(make_uplink(fcnt_up=14), key="ffffffffffffffffffffffffffffffff"))
    server.client.get("/api/messages", headers={"Authorization": "Bearer wrong-token-123456"})
    server.stop()
    log = server.log()
    for secret in (KEY, OLD_KEY, OLD_KEY.lower(), "test-api-token-0123456789abcdef"):
        assert secret not in log
    assert AS_ID not in log or "token" not in log.lower()
