"""End-to-end: the read API and the operations endpoints of a real ``tpas serve``."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from tests.server.conftest import (
    API_TOKEN,
    AS_ID,
    KEY,
    OLD_KEY,
    Server,
    free_port,
    signed,
    start_server,
    write_config,
)
from tpas.bootstrap import build
from tpas.config import ApiSettings, Secret, Settings, StorageSettings
from tpas.interfaces.http import create_app
from tpas.protocol import BodyFormat, Document, decode, encode
from tpas.storage import MemoryStore
from tpas.testing import make_uplink

FIXTURES = Path(__file__).parent.parent / "fixtures"

# One published report per message type.
KIND_FILES = {
    "uplink": "uplink_frame.json",
    "join_request": "uplink_join_request.json",
    "notification": "notification_report.json",
    "location": "location_report.json",
    "downlink_sent": "downlink_frame_sent_report.json",
    "downlink_rejected": "downlink_frame_rejected.json",
    "multicast_summary": "multicast_summary_report.json",
    "device_alarm": "device_alarm_report.json",
    "base_station_alarm": "base_station_alarm_report.json",
}
KINDS = list(KIND_FILES)

# Message field -> model attribute, for the fields that apply to some report types only.
OPTIONAL_FIELDS = {
    "fport": "fport",
    "fcnt_up": "fcnt_up",
    "fcnt_dn": "fcnt_dn",
    "payload_hex": "payload_hex",
    "rssi": "rssi",
    "snr": "snr",
    "spreading_factor": "spreading_factor",
    "lat": "dev_lat",
    "lon": "dev_lon",
}
MESSAGE_KEYS = {"id", "application", "type", "dev_eui", "time", "received_at", "report"}
CSV_COLUMNS = [
    "id", "application", "type", "dev_eui", "time", "received_at", "fport", "fcnt_up",
    "fcnt_dn", "payload_hex", "rssi", "snr", "spreading_factor", "lat", "lon", "correlation_id",
]  # fmt: skip

API_PATHS = [
    "/api/messages",
    "/api/messages/1",
    "/api/messages/1/body",
    "/api/messages/export",
    "/api/devices",
]
PAGED_DEV_EUI = "00AA0000000000FA"
PAGED_COUNT = 250
PAGED_T0 = datetime(2026, 2, 1, tzinfo=UTC)


def _store(server: Server, model: Document, application: str = "farm") -> int:
    """POST ``model`` signed and return its message id."""
    answer = server.post_report(signed(model), application)
    assert answer.status_code == 200, answer.text
    report_id: int = answer.json()["id"]
    return report_id


def _ids(server: Server, **params: str) -> list[int]:
    answer = server.client.get("/api/messages", params={"limit": "1000", **params})
    assert answer.status_code == 200, answer.text
    return [m["id"] for m in answer.json()["items"]]


def _anonymous(server: Server, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET without the API token (or with ``headers`` instead)."""
    return httpx.get(f"{server.url}{path}", headers=headers or {}, timeout=10)


def _fixture(kind: str) -> Document:
    model = decode((FIXTURES / KIND_FILES[kind]).read_bytes())
    assert model.kind == kind
    return model


@pytest.fixture(scope="module")
def every_kind(shared_server: Server) -> dict[str, tuple[int, Document]]:
    """One report of each type, stored from untyped JSON: kind -> (message id, model)."""
    stored: dict[str, tuple[int, Document]] = {}
    for kind in KINDS:
        model = _fixture(kind)
        answer = shared_server.post_report(signed(model, BodyFormat.JSON_UNTYPED))
        assert answer.status_code == 200, answer.text
        stored[kind] = (answer.json()["id"], model)
    return stored


@pytest.fixture(scope="module")
def paged(shared_server: Server) -> list[int]:
    """``PAGED_COUNT`` uplinks of one device, a minute apart; their ids, oldest first."""
    return [
        _store(
            shared_server,
            make_uplink(
                PAGED_DEV_EUI,
                fcnt_up=i,
                time=(PAGED_T0 + timedelta(minutes=i)).isoformat(timespec="milliseconds"),
            ),
        )
        for i in range(PAGED_COUNT)
    ]


@pytest.fixture
def two_apps(tmp_path: Path) -> Iterator[Server]:
    """A fresh server with a second application ``barn`` next to ``farm``."""
    port = free_port()
    extra = f'\n[[applications]]\nname = "barn"\nas_id = "{AS_ID}"\nas_keys = ["{KEY}"]\n'
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}", extra)
    running = start_server(config, tmp_path, port)
    yield running
    running.stop()


# Authentication.

BAD_CREDENTIALS = [
    ("no-header", {}),
    ("wrong-token", {"Authorization": "Bearer not-the-token-0123456789"}),
    ("token-prefix", {"Authorization": f"Bearer {API_TOKEN[:-1]}"}),
    ("basic-scheme", {"Authorization": f"Basic {API_TOKEN}"}),
    ("bare-token", {"Authorization": API_TOKEN}),
    ("empty-bearer", {"Authorization": "Bearer"}),
]


@pytest.mark.parametrize("path", API_PATHS, ids=API_PATHS)
@pytest.mark.parametrize(
    "headers", [c[1] for c in BAD_CREDENTIALS], ids=[c[0] for c in BAD_CREDENTIALS]
)
def test_api_without_the_token_is_401(
    shared_server: Server, path: str, headers: dict[str, str]
) -> None:
    """Every /api route answers 401 unauthorized with a Bearer challenge to a missing,
    wrong or malformed Authorization header."""
    answer = _anonymous(shared_server, path, headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert set(answer.json()) == {"error", "detail"}
    assert answer.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("path", API_PATHS, ids=API_PATHS)
def test_api_with_the_token_is_200(
    shared_server: Server, every_kind: dict[str, tuple[int, Document]], path: str
) -> None:
    """Every /api route answers 200 to the configured bearer token."""
    message_id = every_kind["uplink"][0]
    answer = shared_server.client.get(path.replace("/1", f"/{message_id}"))
    assert answer.status_code == 200, answer.text


def test_authentication_is_checked_before_parameters(shared_server: Server) -> None:
    """A request without the token gets 401 even when its parameters are invalid."""
    answer = _anonymous(shared_server, "/api/messages?limit=0&type=bogus&cursor=x")
    assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized")
    answer = _anonymous(shared_server, "/api/messages/not-a-number")
    assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"application": 7}', b"[]"],
    ids=["malformed-json", "invalid-field", "not-an-object"],
)
@pytest.mark.parametrize(
    "headers", [c[1] for c in BAD_CREDENTIALS], ids=[c[0] for c in BAD_CREDENTIALS]
)
def test_authentication_is_checked_before_the_body(
    shared_server: Server, body: bytes, headers: dict[str, str]
) -> None:
    """A downlink request without the token gets 401 whatever its body: nothing about
    the body's validity is told to an unauthenticated client."""
    answer = httpx.post(
        f"{shared_server.url}/api/downlinks",
        content=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )
    assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    # With the token, the same body is refused for what it is.
    answer = shared_server.client.post(
        "/api/downlinks", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code in (400, 422)


OPEN_PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"]


@pytest.mark.parametrize("path", OPEN_PATHS, ids=OPEN_PATHS)
def test_operations_and_documentation_need_no_token(shared_server: Server, path: str) -> None:
    """Health, readiness, metrics and the API documentation answer 200 without a token."""
    assert _anonymous(shared_server, path).status_code == 200


# Listing messages.


def test_messages_come_newest_first(shared_server: Server) -> None:
    """Messages are listed newest first, whatever their own Time says."""
    dev_eui = "00BB000000000001"
    times = ["2026-01-03T00:00:00.000+00:00", "2026-01-01T00:00:00.000+00:00"]
    stored = [
        _store(shared_server, make_uplink(dev_eui, fcnt_up=i, time=t)) for i, t in enumerate(times)
    ]
    assert _ids(shared_server, dev_eui=dev_eui) == stored[::-1]


@pytest.mark.parametrize(
    "query",
    ["70b3d531c00027c9", "70B3D531C00027C9", "70b3D531c00027C9"],
    ids=["lower", "upper", "mixed"],
)
def test_dev_eui_filter_is_case_insensitive(shared_server: Server, query: str) -> None:
    """A DevEUI filter in any case finds the device's messages, stored in upper case."""
    dev_eui = "70b3d531c00027c9"  # sent in lower case
    message_id = _store(shared_server, make_uplink(dev_eui, fcnt_up=1))
    found = shared_server.client.get("/api/messages", params={"dev_eui": query}).json()["items"]
    assert message_id in [m["id"] for m in found]
    assert {m["dev_eui"] for m in found} == {dev_eui.upper()}


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_type_filter_finds_each_kind(
    shared_server: Server, every_kind: dict[str, tuple[int, Document]], kind: str
) -> None:
    """Filtering by type returns only messages of that type, the stored one among them."""
    message_id, _ = every_kind[kind]
    items = shared_server.client.get("/api/messages", params={"type": kind}).json()["items"]
    assert {m["type"] for m in items} == {kind}
    assert message_id in [m["id"] for m in items]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("type", "bogus"),
        ("type", "UPLINK"),
        ("dev_eui", "XYZ"),
        ("dev_eui", "0018B20000000B2"),
        ("since", "yesterday"),
        ("until", "2026-13-01T00:00:00Z"),
        ("limit", "0"),
        ("limit", "1001"),
        ("limit", "-1"),
        ("limit", "ten"),
    ],
    ids=[
        "unknown-type", "type-case", "dev-eui-text", "dev-eui-short", "since-text",
        "until-month-13", "limit-0", "limit-1001", "limit-negative", "limit-text",
    ],
)  # fmt: skip
def test_invalid_parameters_are_422(shared_server: Server, name: str, value: str) -> None:
    """An invalid filter or limit is answered 422 invalid_parameter naming the parameter."""
    answer = shared_server.client.get("/api/messages", params={name: value})
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_parameter"
    assert answer.json()["detail"].startswith(f"{name}:")


@pytest.mark.parametrize("limit", ["1", "1000"], ids=["limit-1", "limit-1000"])
def test_limit_bounds_are_accepted(shared_server: Server, limit: str) -> None:
    """The smallest and largest limits are accepted and honoured."""
    _store(shared_server, make_uplink("00BB000000000002"))
    answer = shared_server.client.get("/api/messages", params={"limit": limit})
    assert answer.status_code == 200
    assert 1 <= len(answer.json()["items"]) <= int(limit)


TIME_WINDOWS = [
    # (since, until, indices of the reports at T, T+1h, T+2h, T+3h that match)
    ("2026-03-01T01:00:00+00:00", None, [1, 2, 3]),
    ("2026-03-01T03:00:00+02:00", None, [1, 2, 3]),
    ("2026-03-01T01:00:00", None, [1, 2, 3]),
    ("2026-03-01T01:00:00Z", None, [1, 2, 3]),
    (None, "2026-03-01T02:00:00+00:00", [0, 1]),
    (None, "2026-03-01T01:00:00-01:00", [0, 1]),
    ("2026-03-01T00:30:00", "2026-03-01T02:30:00", [1, 2]),
    ("2026-03-01T05:00:00+00:00", None, []),
]


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    TIME_WINDOWS,
    ids=[
        "since-utc", "since-offset", "since-naive-is-utc", "since-z", "until-exclusive",
        "until-negative-offset", "window", "after-everything",
    ],
)  # fmt: skip
def test_since_and_until_filter_on_the_report_time(
    shared_server: Server, since: str | None, until: str | None, expected: list[int]
) -> None:
    """since (inclusive) and until (exclusive) compare with the report's own Time, read
    with its offset; a time without an offset is UTC."""
    dev_eui = f"00CC{TIME_WINDOWS.index((since, until, expected)):012X}"
    # Report times in +01:00 on purpose: the filter compares instants, not texts.
    times = [f"2026-03-01T{h:02d}:00:00.000+01:00" for h in range(1, 5)]
    stored = [
        _store(shared_server, make_uplink(dev_eui, fcnt_up=i, time=t)) for i, t in enumerate(times)
    ]
    params = {"dev_eui": dev_eui}
    params |= {"since": since} if since else {}
    params |= {"until": until} if until else {}
    assert _ids(shared_server, **params) == [stored[i] for i in reversed(expected)]


# Pagination.


def _pages(server: Server, **params: str) -> list[dict[str, Any]]:
    pages = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = server.client.get("/api/messages", params=query)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) <= PAGED_COUNT, "the cursor does not advance"


def test_cursor_pagination_has_no_gaps_or_repeats(shared_server: Server, paged: list[int]) -> None:
    """Paging 250 messages by 100 gives three pages, newest first, each message once, and
    the last page has no cursor."""
    pages = _pages(shared_server, dev_eui=PAGED_DEV_EUI, limit="100")
    assert [len(p["items"]) for p in pages] == [100, 100, 50]
    assert [m["id"] for p in pages for m in p["items"]] == paged[::-1]
    assert pages[-1]["next_cursor"] is None


def test_a_last_page_filled_exactly_has_no_cursor(shared_server: Server) -> None:
    """When the messages fill the last page exactly, it has no cursor (and no empty page
    follows)."""
    dev_eui = "00DD000000000001"
    stored = [_store(shared_server, make_uplink(dev_eui, fcnt_up=i)) for i in range(4)]
    pages = _pages(shared_server, dev_eui=dev_eui, limit="2")
    assert [[m["id"] for m in p["items"]] for p in pages] == [stored[:1:-1], stored[1::-1]]


@pytest.mark.parametrize(
    "cursor",
    ["abc", "-1", "1.5", " ", "99999999999999999999", "9223372036854775808"],
    ids=["word", "negative", "decimal", "space", "20-digits", "over-int64"],
)
def test_a_bad_cursor_is_422(shared_server: Server, cursor: str) -> None:
    """A cursor that this API cannot have issued is answered 422 invalid_parameter."""
    answer = shared_server.client.get("/api/messages", params={"cursor": cursor})
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_parameter")


# One message.


@pytest.mark.parametrize("kind", KINDS, ids=KINDS)
def test_a_message_has_every_documented_field(
    shared_server: Server, every_kind: dict[str, tuple[int, Document]], kind: str
) -> None:
    """Each report type reads back with id, application, type, upper-case DevEUI, its own
    Time, received_at, the fields that apply to it, and the whole report typed."""
    message_id, model = every_kind[kind]
    message = shared_server.client.get(f"/api/messages/{message_id}").json()
    assert set(message) >= MESSAGE_KEYS | set(OPTIONAL_FIELDS)
    dev_eui = getattr(model, "dev_eui", None)
    assert (message["id"], message["application"], message["type"]) == (message_id, "farm", kind)
    assert message["dev_eui"] == (dev_eui.upper() if dev_eui else None)
    assert message["time"] == (
        getattr(model, "time", None) or getattr(model, "creation_time", None)
    )
    assert datetime.fromisoformat(message["received_at"]).utcoffset() == timedelta(0)
    for field, attribute in OPTIONAL_FIELDS.items():
        assert message[field] == getattr(model, attribute, None), field
    # Sent as untyped JSON (every value a string), read back typed.
    assert message["report"] == msgspec.json.decode(encode(model, BodyFormat.JSON))


def test_a_location_gives_lat_and_lon(
    shared_server: Server, every_kind: dict[str, tuple[int, Document]]
) -> None:
    """A location report's DevLAT and DevLON are the message's lat and lon, as numbers."""
    message_id, _ = every_kind["location"]
    message = shared_server.client.get(f"/api/messages/{message_id}").json()
    assert (message["lat"], message["lon"]) == (10.11212, 7.44464)
    assert message["report"]["DevEUI_location"]["DevLAT"] == 10.11212


def test_a_message_reads_the_same_in_the_list_and_by_id(
    shared_server: Server, every_kind: dict[str, tuple[int, Document]]
) -> None:
    """A message is identical in the list and at its own URL."""
    message_id, _ = every_kind["uplink"]
    by_id = shared_server.client.get(f"/api/messages/{message_id}").json()
    params = {"cursor": str(message_id + 1), "limit": "1"}
    listed = shared_server.client.get("/api/messages", params=params).json()
    assert listed["items"] == [by_id]


def test_an_unknown_message_is_404(shared_server: Server) -> None:
    """An id no message has is answered 404 not_found, for the message and its body."""
    for path in ("/api/messages/987654321", "/api/messages/987654321/body"):
        answer = shared_server.client.get(path)
        assert (answer.status_code, answer.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize("suffix", ["", "/body"], ids=["message", "body"])
@pytest.mark.parametrize(
    "message_id",
    ["abc", "1.5", "0", "-3", "9223372036854775808"],
    ids=["word", "decimal", "zero", "negative", "over-int64"],
)
def test_a_message_id_that_is_not_an_id_is_422(
    shared_server: Server, message_id: str, suffix: str
) -> None:
    """A message id that is not a positive 64-bit integer is answered 422 invalid_parameter."""
    answer = shared_server.client.get(f"/api/messages/{message_id}{suffix}")
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_parameter")


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [(BodyFormat.JSON, "application/json"), (BodyFormat.XML, "application/xml")],
    ids=["json", "xml"],
)
def test_the_body_endpoint_returns_the_original_bytes(
    shared_server: Server, fmt: BodyFormat, content_type: str
) -> None:
    """/body returns the bytes ThingPark sent, with the content type they came with."""
    report = signed(make_uplink("00EE000000000001", fcnt_up=int(fmt is BodyFormat.XML)), fmt)
    message_id = shared_server.post_report(report).json()["id"]
    answer = shared_server.client.get(f"/api/messages/{message_id}/body")
    assert answer.content == report.body
    assert answer.headers["Content-Type"].split(";")[0] == content_type


def test_unknown_routes_and_methods_answer_in_the_error_shape(shared_server: Server) -> None:
    """An unknown /api path is 404 not_found and a wrong method 405 method_not_allowed,
    both as {"error", "detail"}."""
    missing = shared_server.client.get("/api/nothing-here")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert set(missing.json()) == {"error", "detail"}
    wrong = shared_server.client.post("/api/messages")
    assert (wrong.status_code, wrong.json()["error"]) == (405, "method_not_allowed")
    assert wrong.headers["Allow"] == "GET"


# Export.


def _ndjson(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    return [msgspec.json.decode(line) for line in answer.text.splitlines()]


def _csv(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(answer.text, newline=""))
    assert reader.fieldnames == CSV_COLUMNS
    return list(reader)


def test_ndjson_export_streams_every_message_as_the_api_shows_it(
    shared_server: Server, paged: list[int]
) -> None:
    """The NDJSON export of 250 messages by pages of 100 is chunked, has one JSON line per
    message, and each line equals the message in the paged list."""
    params = {"dev_eui": PAGED_DEV_EUI, "limit": "100"}
    answer = shared_server.client.get("/api/messages/export", params={**params, "format": "ndjson"})
    assert "content-length" not in answer.headers
    listed = [m for page in _pages(shared_server, **params) for m in page["items"]]
    assert _ndjson(answer) == listed
    assert len(listed) == PAGED_COUNT


def test_ndjson_is_the_default_export_format(shared_server: Server, paged: list[int]) -> None:
    """Without a format the export is NDJSON."""
    answer = shared_server.client.get("/api/messages/export", params={"dev_eui": PAGED_DEV_EUI})
    assert [m["id"] for m in _ndjson(answer)] == paged[::-1]


def test_csv_export_streams_every_message_with_a_header(
    shared_server: Server, paged: list[int]
) -> None:
    """The CSV export of 250 messages by pages of 100 is chunked, starts with a header row,
    parses with the csv module, and has one row per message, newest first."""
    answer = shared_server.client.get(
        "/api/messages/export",
        params={"dev_eui": PAGED_DEV_EUI.lower(), "limit": "100", "format": "csv"},
    )
    assert "content-length" not in answer.headers
    rows = _csv(answer)
    assert [int(r["id"]) for r in rows] == paged[::-1]
    first = rows[-1]
    assert (first["type"], first["dev_eui"], first["fcnt_up"]) == ("uplink", PAGED_DEV_EUI, "0")
    assert (first["rssi"], first["payload_hex"], first["lat"]) == ("-80.0", "0102", "")
    assert first["time"] == PAGED_T0.isoformat(timespec="milliseconds")


@pytest.mark.parametrize("fmt", ["ndjson", "csv"], ids=["ndjson", "csv"])
def test_filters_apply_to_exports(shared_server: Server, paged: list[int], fmt: str) -> None:
    """An export with since/until/type/dev_eui filters and a small page size holds exactly
    the matching messages."""
    params = {
        "dev_eui": PAGED_DEV_EUI,
        "type": "uplink",
        "since": (PAGED_T0 + timedelta(minutes=150)).isoformat(),
        "until": (PAGED_T0 + timedelta(minutes=200)).isoformat(),
        "limit": "7",
        "format": fmt,
    }
    answer = shared_server.client.get("/api/messages/export", params=params)
    rows = _ndjson(answer) if fmt == "ndjson" else _csv(answer)
    assert [int(r["id"]) for r in rows] == paged[150:200][::-1]


def test_an_export_matching_nothing_is_empty(shared_server: Server) -> None:
    """An export matching no message is an empty NDJSON body, or a CSV header alone."""
    params = {"dev_eui": "00FF000000000000"}
    ndjson = shared_server.client.get("/api/messages/export", params=params)
    assert (ndjson.status_code, ndjson.content) == (200, b"")
    csv_answer = shared_server.client.get(
        "/api/messages/export", params={**params, "format": "csv"}
    )
    assert _csv(csv_answer) == []


def test_an_unknown_export_format_is_422(shared_server: Server) -> None:
    """An export format other than ndjson or csv is answered 422 invalid_parameter."""
    answer = shared_server.client.get("/api/messages/export", params={"format": "xlsx"})
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid_parameter")


# Devices and the application filter (row counts matter: a fresh server).


def test_devices_summarise_each_device_of_each_application(two_apps: Server) -> None:
    """/api/devices has one entry per (application, DevEUI) with its last_seen, its
    message counts by type, and the RSSI/SNR of its latest uplink."""
    a, b = "00AB000000000001", "00AB000000000002"
    _store(two_apps, make_uplink(a, fcnt_up=1, rssi=-70.0, snr=9.0))
    _store(two_apps, make_uplink(a, fcnt_up=2, rssi=-95.5, snr=-3.25))
    notification = msgspec.structs.replace(_fixture("notification"), dev_eui=a)
    last_a = _store(two_apps, notification)  # newer than the uplinks, but without radio data
    last_barn = _store(two_apps, make_uplink(a, fcnt_up=1, rssi=-60.0, snr=1.0), "barn")
    location = msgspec.structs.replace(_fixture("location"), dev_eui=b.lower())
    last_b = _store(two_apps, location)
    _store(two_apps, _fixture("base_station_alarm"))  # no device: not listed

    def received(message_id: int) -> str:
        received_at: str = two_apps.client.get(f"/api/messages/{message_id}").json()["received_at"]
        return received_at

    devices = two_apps.client.get("/api/devices").json()["items"]
    summary = {(d["application"], d["dev_eui"]): d for d in devices}
    assert sorted(summary) == [("barn", a), ("farm", a), ("farm", b)]
    expected = {
        ("farm", a): ({"uplink": 2, "notification": 1}, -95.5, -3.25, received(last_a)),
        ("barn", a): ({"uplink": 1}, -60.0, 1.0, received(last_barn)),
        ("farm", b): ({"location": 1}, None, None, received(last_b)),
    }
    for key, (counts, rssi, snr, last_seen) in expected.items():
        device = summary[key]
        assert device["message_counts"] == counts, key
        assert (device["last_rssi"], device["last_snr"]) == (rssi, snr), key
        assert datetime.fromisoformat(device["last_seen"]) == datetime.fromisoformat(last_seen)
    barn = two_apps.client.get("/api/devices", params={"application": "barn"}).json()["items"]
    assert [(d["application"], d["dev_eui"]) for d in barn] == [("barn", a)]


def test_the_application_filter_separates_applications(two_apps: Server) -> None:
    """The application filter returns that application's messages only, in lists and
    exports."""
    farm = [_store(two_apps, make_uplink(fcnt_up=i)) for i in range(2)]
    barn = [_store(two_apps, make_uplink(fcnt_up=i), "barn") for i in range(3)]
    assert _ids(two_apps, application="farm") == farm[::-1]
    assert _ids(two_apps, application="barn") == barn[::-1]
    assert _ids(two_apps, application="nobody") == []
    export = two_apps.client.get("/api/messages/export", params={"application": "barn"})
    assert [m["application"] for m in _ndjson(export)] == ["barn"] * 3


# The OpenAPI document.


def _openapi(server: Server) -> dict[str, Any]:
    answer = _anonymous(server, "/openapi.json")
    assert answer.headers["Content-Type"] == "application/json"
    document: dict[str, Any] = msgspec.json.decode(answer.content)
    return document


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_the_openapi_document_lists_the_read_api(shared_server: Server) -> None:
    """/openapi.json is an OpenAPI 3 document listing the read API, and each of its
    references resolves."""
    document = _openapi(shared_server)
    assert document["openapi"].startswith("3.")
    expected = {
        "/api/messages",
        "/api/messages/{message_id}",
        "/api/devices",
        "/api/messages/export",
    }
    assert expected <= set(document["paths"])
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/")
        assert ref.rpartition("/")[2] in schemas, ref


def test_the_openapi_document_describes_the_report_endpoint(shared_server: Server) -> None:
    """The raw report endpoint appears in /openapi.json with its query parameters, JSON and
    XML bodies, and every answer, refusals described by ErrorBody."""
    operation = _openapi(shared_server)["paths"]["/thingpark/{application}"]["post"]
    parameters = {(p["name"], p["in"]) for p in operation["parameters"]}
    names = ["LrnDevEui", "LrnFPort", "LrnInfos", "AS_ID", "Time", "Token"]
    assert parameters == {("application", "path")} | {(n, "query") for n in names}
    assert {"application/json", "application/xml"} <= set(operation["requestBody"]["content"])
    responses = operation["responses"]
    assert set(responses) == {"200", "400", "401", "403", "404", "413", "415", "503"}
    for status, response in responses.items():
        schema = response["content"]["application/json"]["schema"]
        expected = "ReportAnswer" if status == "200" else "ErrorBody"
        assert schema == {"$ref": f"#/components/schemas/{expected}"}, status
    assert "token_mismatch" in responses["401"]["description"]


def test_the_report_endpoint_is_still_served_raw(shared_server: Server) -> None:
    """Documenting the report endpoint does not route it through the API: it still answers
    in its own shape, without a bearer token."""
    _openapi(shared_server)
    answer = shared_server.post_report(signed(make_uplink("00EE000000000002")))
    assert answer.status_code == 200
    assert set(answer.json()) == {"status", "id", "type"}


def test_docs_serve_html(shared_server: Server) -> None:
    """/docs serves the browsable documentation as HTML pointing at /openapi.json."""
    answer = _anonymous(shared_server, "/docs")
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "/openapi.json" in answer.text


# Operations.


def _samples(text: str) -> dict[str, float]:
    """Prometheus text exposition as {name{labels}: value}."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_count_accepted_duplicate_and_refused_reports(server: Server) -> None:
    """After accepted, duplicate and refused reports, /metrics counts each, observes every
    report request and commit, and records the network server's clock skew."""
    reports = [signed(make_uplink(fcnt_up=i)) for i in range(3)]
    for report in reports:
        assert server.post_report(report).status_code == 200
    assert server.post_report(reports[0]).json()["status"] == "duplicate"
    wrong = signed(make_uplink(fcnt_up=9), key="ffffffffffffffffffffffffffffffff")
    assert server.post_report(wrong).status_code == 401
    big = reports[1].body + b" " * (64 * 1024)
    oversized = server.client.post(
        f"/thingpark/farm?{reports[1].query}",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert oversized.status_code == 413

    answer = _anonymous(server, "/metrics")
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(answer.text)
    assert samples['tpas_reports_accepted_total{application="farm",kind="uplink"}'] == 3
    assert samples['tpas_reports_duplicate_total{application="farm"}'] == 1
    assert samples['tpas_reports_refused_total{reason="token_mismatch"}'] == 1
    assert samples['tpas_reports_refused_total{reason="body_too_large"}'] == 1
    assert samples["tpas_report_request_seconds_count"] == 6
    assert samples['tpas_report_request_seconds_bucket{le="+Inf"}'] == 6
    assert samples["tpas_commit_batch_size_sum"] == 4  # 3 stored + 1 duplicate
    assert samples["tpas_commit_batch_size_count"] >= 1
    assert samples["tpas_ns_clock_skew_seconds_count"] > 0
    for histogram in ("tpas_report_request_seconds", "tpas_commit_batch_size"):
        assert f"# TYPE {histogram} histogram" in answer.text


def test_metrics_reveal_no_secret(server: Server) -> None:
    """/metrics shows neither an AS key, nor the API token, nor a report token."""
    report = signed(make_uplink(fcnt_up=1))
    server.post_report(report)
    server.post_report(signed(make_uplink(fcnt_up=2), key=OLD_KEY))
    server.client.get("/api/messages", headers={"Authorization": "Bearer wrong-token-123456"})
    text = _anonymous(server, "/metrics").text.lower()
    for secret in (KEY, OLD_KEY, API_TOKEN, report.token):
        assert secret.lower() not in text


def test_health_and_readiness(shared_server: Server) -> None:
    """/healthz says ok and /readyz says ready while storage answers."""
    assert _anonymous(shared_server, "/healthz").json() == {"status": "ok"}
    ready = _anonymous(shared_server, "/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_storage_outages_are_503_not_500(tmp_path: Path) -> None:
    """In process, with storage down: the read API answers 503 storage_unavailable and
    /readyz answers 503, while /healthz stays 200."""
    settings = Settings(
        storage=StorageSettings(url=Secret("memory://"), spool_dir=str(tmp_path / "spool")),
        api=ApiSettings(tokens=(Secret(API_TOKEN),)),
    )
    services = build(settings)
    store = services.store
    assert isinstance(store, MemoryStore)

    async def run() -> dict[str, httpx.Response]:
        await services.start()
        store.available = False
        transport = httpx.ASGITransport(app=create_app(services))
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://tpas", headers=headers
            ) as client:
                paths = [*API_PATHS[:3], "/api/devices", "/readyz", "/healthz"]
                return {path: await client.get(path) for path in paths}
        finally:
            store.available = True
            await services.stop()

    answers = asyncio.run(run())
    assert answers.pop("/healthz").status_code == 200
    assert answers.pop("/readyz").status_code == 503
    for path, answer in answers.items():
        assert (answer.status_code, answer.json()["error"]) == (503, "storage_unavailable"), path
