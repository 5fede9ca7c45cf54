"""End-to-end: downlinks through the outbox to a fake network server on loopback."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import AS_ID, KEY, Server, free_port, signed, start_server, write_config
from tests.server.fake_ns import V1, V2, FakeNetworkServer, timeout, v1_error, v2_error
from tpas.protocol import DownlinkSent
from tpas.protocol.answers import ERRORS, NsError, Outcome

FAST_RETRIES = """
[downlinks]
retry_base = 0.05
retry_cap = 0.2
http_timeout = 1.0
poll_interval = 0.05
max_attempts = 4
"""

# For tests under load from many downlinks at once: a slow answer is not a lost one.
PATIENT = FAST_RETRIES.replace("http_timeout = 1.0", "http_timeout = 10.0").replace(
    "max_attempts = 4", "max_attempts = 20"
)


def _start(
    directory: Path,
    ns: FakeNetworkServer,
    path: str = V1,
    *,
    database: Path | None = None,
    downlinks: str = FAST_RETRIES,
) -> Server:
    port = free_port()
    storage = f"sqlite:///{database or directory / 'tpas.db'}"
    extra = f'downlink_url = "{ns.url}{path}"\n{downlinks}'
    if ns.confirm:
        ns.report_url = f"http://127.0.0.1:{port}/thingpark/farm"
    config = write_config(directory, port, storage, extra)
    return start_server(config, directory, port)


@pytest.fixture
def ns() -> Iterator[FakeNetworkServer]:
    """A fake network server that verifies tokens; it does not send delivery reports."""
    fake = FakeNetworkServer(AS_ID, KEY).start()
    yield fake
    fake.stop()


@pytest.fixture
def server_v1(tmp_path: Path, ns: FakeNetworkServer) -> Iterator[Server]:
    """tpas with its downlink_url on the fake network server's v1 path."""
    running = _start(tmp_path, ns, V1)
    yield running
    running.stop()


def _send(server: Server, **fields: Any) -> httpx.Response:
    body = {"application": "farm", "dev_eui": "0018B20000000B20", "fport": 2,
            "payload_hex": "0a0b", **fields}  # fmt: skip
    headers = fields.pop("headers", None)
    return server.client.post("/api/downlinks", json=body, headers=headers)


def _wait(
    server: Server,
    downlink_id: int,
    done: Callable[[dict[str, Any]], bool],
    limit: float = 20,
) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        data = server.client.get(f"/api/downlinks/{downlink_id}").json()
        if done(data):
            return data
        time.sleep(0.05)
    raise AssertionError(f"downlink {downlink_id} stuck: {data}")


def _status_in(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d["status"] in statuses


def test_a_downlink_is_signed_submitted_and_verified_on_v1(
    server_v1: Server, ns: FakeNetworkServer
) -> None:
    """A queued downlink reaches the v1 endpoint with a token the network server verifies,
    in Actility's parameter order, and ends submitted with one accepted attempt."""
    answer = _send(server_v1, confirmed=True)
    assert answer.status_code == 202
    queued = answer.json()
    assert queued["status"] == "queued"
    assert len(queued["correlation_id"]) == 16
    done = _wait(server_v1, queued["id"], _status_in("submitted"))
    assert [a["outcome"] for a in done["attempts"]] == ["accepted"]
    (request,) = ns.received
    assert request.token_ok
    assert list(request.params) == [
        "DevEUI", "FPort", "Payload", "Confirmed", "AS_ID", "Time", "CorrelationID", "Token",
    ]  # fmt: skip
    assert request.params["Payload"] == "0A0B"
    assert request.params["CorrelationID"] == queued["correlation_id"]


def test_a_downlink_is_accepted_on_v2(tmp_path: Path, ns: FakeNetworkServer) -> None:
    """The v2 endpoint's 202 counts as acceptance."""
    server = _start(tmp_path, ns, V2)
    try:
        queued = _send(server).json()
        done = _wait(server, queued["id"], _status_in("submitted"))
        assert done["attempts"][0]["http_status"] == 202
    finally:
        server.stop()


def test_transient_failures_are_retried_until_accepted(
    server_v1: Server, ns: FakeNetworkServer
) -> None:
    """Two transient refusals, then acceptance: three attempts, ending submitted."""
    ns.script.extend(
        [v1_error("No Base Station Available", 404), v1_error("Token bucket limit reached")]
    )
    queued = _send(server_v1).json()
    done = _wait(server_v1, queued["id"], _status_in("submitted"))
    assert [a["outcome"] for a in done["attempts"]] == ["transient", "transient", "accepted"]
    assert [a["http_status"] for a in done["attempts"]] == [404, 350, 200]
    assert len(ns.received) == 3


def test_a_timeout_is_retried(server_v1: Server, ns: FakeNetworkServer) -> None:
    """A network server that does not answer in time gets the downlink again later."""
    ns.script.append(timeout(2.0))
    queued = _send(server_v1).json()
    done = _wait(server_v1, queued["id"], _status_in("submitted"))
    assert done["attempts"][0]["outcome"] == "transient"
    assert done["attempts"][0]["http_status"] is None
    assert "no answer" in done["attempts"][0]["message"]
    assert done["attempts"][-1]["outcome"] == "accepted"


PERMANENT = [e for e in ERRORS if e.outcome is Outcome.PERMANENT]


@pytest.fixture(scope="module")
def permanent_setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, FakeNetworkServer]]:
    """One server and fake network server shared by the permanent-error cases."""
    fake = FakeNetworkServer(AS_ID, KEY).start()
    running = _start(tmp_path_factory.mktemp("permanent"), fake, V1)
    yield running, fake
    running.stop()
    fake.stop()


@pytest.mark.parametrize("generation", ["v1", "v2"])
@pytest.mark.parametrize("error", PERMANENT, ids=[str(e.code) for e in PERMANENT])
def test_every_permanent_error_fails_at_once(
    permanent_setup: tuple[Server, FakeNetworkServer], error: NsError, generation: str
) -> None:
    """Each permanent network-server error of the table, as a v1 message or a v2 code,
    ends the downlink as failed after one attempt, with the network's message."""
    server, ns = permanent_setup
    v2 = generation == "v2"
    ns.script.append(v2_error(error.code, error.message) if v2 else v1_error(error.message))
    dev_eui = f"{error.code:08X}{int(v2):08X}"
    before = len(ns.received)
    queued = _send(server, dev_eui=dev_eui).json()
    done = _wait(server, queued["id"], _status_in("failed"))
    assert [a["outcome"] for a in done["attempts"]] == ["permanent"]
    assert error.message in done["detail"]
    time.sleep(0.2)
    assert len(ns.received) == before + 1, "a permanent error must not be retried"


def test_retries_stop_after_max_attempts(server_v1: Server, ns: FakeNetworkServer) -> None:
    """A network server that keeps refusing transiently exhausts max_attempts: failed."""
    ns.script.extend([v1_error("Token bucket limit reached")] * 10)
    queued = _send(server_v1).json()
    done = _wait(server_v1, queued["id"], _status_in("failed"))
    assert len(done["attempts"]) == 4
    assert "gave up after 4 attempts" in done["detail"]


def test_a_downlink_expires_with_its_validity(server_v1: Server, ns: FakeNetworkServer) -> None:
    """A downlink whose ValidityTime passes while the network keeps refusing expires
    (before max_attempts would have failed it), and is not tried again."""
    ns.script.extend([v1_error("No Base Station Available", 404)] * 100)
    validity = (datetime.now(UTC) + timedelta(seconds=0.2)).isoformat(timespec="milliseconds")
    queued = _send(server_v1, validity_time=validity).json()
    done = _wait(server_v1, queued["id"], _status_in("expired"))
    assert len(done["attempts"]) < 4
    assert done["finished_at"] is not None
    tried = len(ns.received)
    time.sleep(0.3)
    assert len(ns.received) == tried


def test_downlinks_to_one_device_are_submitted_in_order(
    server_v1: Server, ns: FakeNetworkServer
) -> None:
    """Five downlinks to one device reach the network in the order they were queued, even
    when the first needs retries."""
    ns.script.extend([v1_error("No Base Station Available", 404)] * 2)
    ids = [_send(server_v1, payload_hex=f"0{i}").json()["id"] for i in range(5)]
    for downlink_id in ids:
        _wait(server_v1, downlink_id, _status_in("submitted"))
    accepted = [r.params["Payload"] for r in ns.accepted()]
    assert accepted == ["00", "01", "02", "03", "04"]


def test_an_idempotency_key_never_queues_a_second_downlink(
    server_v1: Server, ns: FakeNetworkServer
) -> None:
    """The same Idempotency-Key returns the same downlink, and only one is sent."""
    first = _send(server_v1, headers={"Idempotency-Key": "order-42"})
    second = _send(server_v1, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202
    assert second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    _wait(server_v1, first.json()["id"], _status_in("submitted"))
    time.sleep(0.3)
    assert len(ns.received) == 1


def test_a_queued_downlink_can_be_cancelled(server_v1: Server, ns: FakeNetworkServer) -> None:
    """A downlink waiting behind a stuck one is cancelled and never reaches the network;
    a submitted one cannot be cancelled (409)."""
    ns.script.extend([timeout(2.0)] * 3)
    blocking = _send(server_v1, payload_hex="01").json()
    waiting = _send(server_v1, payload_hex="02").json()
    cancelled = server_v1.client.delete(f"/api/downlinks/{waiting['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    _wait(server_v1, blocking["id"], _status_in("submitted"))
    assert all(r.params.get("Payload") != "02" for r in ns.received)
    again = server_v1.client.delete(f"/api/downlinks/{blocking['id']}")
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"dev_eui": "XYZ"}, 422, "invalid_downlink_parameter"),
        ({"payload_hex": "abc"}, 422, "invalid_downlink_parameter"),
        ({"fport": 0}, 422, "invalid_downlink_parameter"),
        ({"fport": None}, 422, "invalid_downlink_parameter"),
        ({"correlation_id": "12"}, 422, "invalid_downlink_parameter"),
        ({"validity_time": "soon"}, 422, "invalid_downlink_parameter"),
        ({"application": "nobody"}, 404, "unknown_application"),
        ({"fport": "two"}, 422, "invalid_parameter"),
    ],
    ids=["dev-eui", "odd-payload", "port-0", "no-port", "correlation", "validity", "app", "type"],
)
def test_bad_downlink_requests_are_refused_before_queueing(
    server_v1: Server, ns: FakeNetworkServer, body: dict[str, Any], status: int, error: str
) -> None:
    """Invalid downlink requests get a 4xx with a reason, and nothing is queued or sent."""
    answer = _send(server_v1, **body)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert server_v1.client.get("/api/downlinks").json()["items"] == []
    assert ns.received == []


def test_malformed_json_is_400(server_v1: Server) -> None:
    """A body that is not JSON is refused 400 malformed_json."""
    answer = server_v1.client.post(
        "/api/downlinks", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (answer.status_code, answer.json()["error"]) == (400, "malformed_json")


def _delivery_report(correlation_id: str, status: int, cause1: str = "00") -> DownlinkSent:
    return DownlinkSent(
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        dev_eui="0018B20000000B20",
        fport=2,
        fcnt_dn=7,
        delivery_status=status,
        delivery_failed_cause1=cause1,
        delivery_failed_cause2="00",
        transmission_slot=1 if status else 0,
        customer_id="100000507",
        correlation_id=correlation_id,
    )


@pytest.mark.parametrize(
    ("delivery_status", "cause", "final", "text"),
    [(1, "00", "sent", None), (0, "B0", "failed", "too late for RX1")],
    ids=["sent", "failed"],
)
def test_a_delivery_report_settles_the_downlink(
    server_v1: Server, delivery_status: int, cause: str, final: str, text: str | None
) -> None:
    """A DevEUI_downlink_Sent report posted to the report endpoint moves the downlink it
    names by CorrelationID to sent or failed, with slot and causes decoded."""
    queued = _send(server_v1).json()
    _wait(server_v1, queued["id"], _status_in("submitted"))
    report = signed(_delivery_report(queued["correlation_id"], delivery_status, cause))
    assert server_v1.post_report(report).status_code == 200
    done = _wait(server_v1, queued["id"], _status_in(final))
    delivery = done["delivery"]
    assert delivery["delivery_status"] == delivery_status
    if text is None:
        assert delivery["slot"] == "RX1"
        assert delivery["causes"] == []
    else:
        assert delivery["causes"] == [{"slot": "RX1", "code": cause, "text": text}]


def test_a_rejection_report_marks_the_downlink_rejected(server_v1: Server) -> None:
    """A DevEUI_downlink_Rejected report for the device and port rejects the downlink."""
    from tpas.protocol import DownlinkRejected

    queued = _send(server_v1).json()
    _wait(server_v1, queued["id"], _status_in("submitted"))
    rejected = DownlinkRejected(
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        dev_eui="0018B20000000B20",
        fport=2,
        delivery_status=350,
        downlink_rejection_cause="Downlink counter value already used. Expected=1238",
        customer_id="100000507",
    )
    assert server_v1.post_report(signed(rejected)).status_code == 200
    done = _wait(server_v1, queued["id"], _status_in("rejected"))
    assert "already used" in done["delivery"]["rejection_cause"]


def test_kill_9_with_downlinks_in_flight_loses_none(tmp_path: Path) -> None:
    """After kill -9 with downlinks queued and in flight, a restarted server takes every
    one of them to sent (the network server confirms each), and none is lost."""
    ns = FakeNetworkServer(AS_ID, KEY, confirm=True).start()
    ns.script.extend([timeout(0.5)] * 5)
    database = tmp_path / "tpas.db"
    try:
        server = _start(tmp_path, ns, V1, database=database, downlinks=PATIENT)
        ids = [
            _send(server, dev_eui=f"{i:016X}", payload_hex=f"{i % 256:02X}").json()["id"]
            for i in range(40)
        ]
        time.sleep(0.3)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        server.client.close()
        server = _start(tmp_path, ns, V1, database=database, downlinks=PATIENT)
        try:
            # Downlinks the killed process had leased wait for the lease to end
            # (2 * http_timeout + 5 s) before another attempt.
            for downlink_id in ids:
                _wait(server, downlink_id, _status_in("sent"), limit=90)
        finally:
            server.stop()
    finally:
        ns.stop()
    correlation = {r.params["CorrelationID"] for r in ns.accepted()}
    assert len(correlation) == 40


def test_downlink_metrics(server_v1: Server, ns: FakeNetworkServer) -> None:
    """/metrics counts queued downlinks, attempts by outcome, and the outbox by status."""
    ns.script.append(v1_error("Token bucket limit reached"))
    queued = _send(server_v1).json()
    _wait(server_v1, queued["id"], _status_in("submitted"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = server_v1.client.get("/metrics").text
        if 'tpas_outbox_downlinks{status="submitted"} 1' in text:
            break
        time.sleep(0.1)
    assert 'tpas_outbox_downlinks{status="submitted"} 1' in text
    assert 'tpas_downlinks_queued_total{application="farm"} 1' in text
    assert 'tpas_downlink_attempts_total{outcome="transient"} 1' in text
    assert 'tpas_downlink_attempts_total{outcome="accepted"} 1' in text
