"""Properties of QUALITY.md that no other test pinned down, each by a test that fails when
the property breaks (the map of every property to its tests is in docs/reliability.md).

- SEC-1: a refused delivery report changes no downlink.
- SEC-2: report tokens and API bearer tokens go through ``hmac.compare_digest``.
- SEC-3: the running server accepts Time's '+' raw or as %2B, and parameters in any order.
- SEC-4: the freshness window is each application's own.
- SEC-5: a replay whose digits moved between FCntUp and payload_hex is stored once.
- SEC-7: unsigned fields are stored as sent and play no part in routing, authorising or
  recognising a frame.
- SEC-9: no key or API token in the log (at debug level), any answer, /metrics, or the
  URLs tpas emits, whatever was refused.
- SEC-12: every downlink route needs the bearer token; with ``tls_certfile`` and
  ``tls_keyfile`` tpas serves HTTPS itself, and the API still needs its bearer token.
- REL-3: a request in flight at SIGTERM is finished and stored, new connections are
  refused meanwhile, and the process exits 0.
- REL-5: a transient refusal is retried after ``base * 2**(n-1)``, half-jittered.
- REL-7: the spooled and replayed counters move on /metrics.

Most run in process (the ASGI app on a memory store, through httpx); SEC-9, SEC-12 and
REL-3 need a real ``tpas serve`` process on real sockets.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import pytest

import tpas.protocol.token as token_module
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
from tests.server.fake_ns import V1, FakeNetworkServer, v1_error
from tpas.bootstrap import Services, build
from tpas.config import (
    ApiSettings,
    ApplicationSettings,
    DownlinkSettings,
    Secret,
    Settings,
    StorageSettings,
)
from tpas.interfaces.http import create_app
from tpas.protocol import AsKey, BodyFormat, DownlinkSent, Gateway, Lrrs, check_report, encode
from tpas.services.dispatcher import Dispatcher, DownlinkTarget
from tpas.services.metrics import Metrics
from tpas.services.retry import Backoff
from tpas.storage import MemoryStore
from tpas.storage.ports import NewDownlink
from tpas.testing import make_uplink, sign_report

BARN_AS_ID: Final = "TWA_100000507.2222.AS"
BARN_KEY: Final = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
# Nothing listens on the discard port: downlinks stay queued, retried, never submitted.
NOWHERE: Final = "http://127.0.0.1:9/thingpark/lrc/rest/downlink"


# In process: the real app and services on a memory store.


@asynccontextmanager
async def _in_process(spool: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The app for two applications, started: ``farm`` (two keys, a 120 s window for
    the query Time, downlinks to a closed port) and ``barn`` (a 600 s window)."""
    settings = Settings(
        storage=StorageSettings(url=Secret("memory://"), spool_dir=str(spool)),
        api=ApiSettings(tokens=(Secret(API_TOKEN),)),
        applications=(
            ApplicationSettings("farm", AS_ID, (AsKey(KEY), AsKey(OLD_KEY)), 120.0, NOWHERE),
            ApplicationSettings("barn", BARN_AS_ID, (AsKey(BARN_KEY),), 600.0),
        ),
        downlinks=DownlinkSettings(retry_base=30.0, http_timeout=0.5),
    )
    services = build(settings)
    await services.start()
    transport = httpx.ASGITransport(app=create_app(services))
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://tpas", headers=headers
        ) as client:
            yield client, services
    finally:
        await services.stop()


async def _post(
    client: httpx.AsyncClient, query: str, body: bytes, application: str = "farm"
) -> httpx.Response:
    return await client.post(
        f"/thingpark/{application}?{query}",
        content=body,
        headers={"Content-Type": "application/json"},
    )


@dataclass
class _Recorder:
    """Wraps a comparison function and records every pair it was given."""

    compare: Callable[[Any, Any], bool]
    calls: list[tuple[Any, Any]]

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self.compare(a, b)


def test_report_tokens_are_compared_with_compare_digest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SEC-2: every candidate token, accepted or refused, on the protocol call and
    through the HTTP endpoint, is compared by hmac.compare_digest."""
    assert token_module._same is hmac.compare_digest
    recorder = _Recorder(hmac.compare_digest, [])
    monkeypatch.setattr(token_module, "_same", recorder)
    keys = (AsKey(KEY), AsKey(OLD_KEY))
    candidates = sum(len(key.variants) for key in keys)
    for fmt in BodyFormat:
        report = signed(make_uplink(fcnt_up=1), fmt, key=OLD_KEY)
        recorder.calls.clear()
        accepted = check_report(report.body, fmt, report.query, keys, as_id=AS_ID)
        assert accepted.verdict.ok, accepted.verdict.detail
        assert recorder.calls, "the token was compared without hmac.compare_digest"
        assert recorder.calls[-1] == (report.token, report.token), fmt
        forged = report.query.replace(report.token, "0" * 64)
        recorder.calls.clear()
        refused = check_report(report.body, fmt, forged, keys, as_id=AS_ID)
        assert not refused.verdict.ok
        assert {b for _, b in recorder.calls} == {"0" * 64}, fmt
        assert len({a for a, _ in recorder.calls}) == candidates, fmt

    async def over_http() -> int:
        async with _in_process(tmp_path / "spool") as (client, _):
            report = signed(make_uplink(fcnt_up=2), key=OLD_KEY)
            recorder.calls.clear()
            answer = await _post(client, report.query, report.body)
            assert recorder.calls[-1] == (report.token, report.token)
            return answer.status_code

    assert asyncio.run(over_http()) == 200


def test_api_bearer_tokens_are_compared_with_compare_digest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """SEC-2: the API compares a right and a wrong bearer token with the configured one
    through hmac.compare_digest."""
    recorder = _Recorder(hmac.compare_digest, [])
    monkeypatch.setattr(hmac, "compare_digest", recorder)

    async def ask() -> list[int]:
        async with _in_process(tmp_path / "spool") as (client, _):
            statuses = []
            for bearer in (API_TOKEN, "wrong-bearer-token"):
                answer = await client.get(
                    "/api/messages", headers={"Authorization": f"Bearer {bearer}"}
                )
                statuses.append(answer.status_code)
            return statuses

    assert asyncio.run(ask()) == [200, 401]
    configured = API_TOKEN.encode()
    assert (API_TOKEN.encode(), configured) in recorder.calls
    assert (b"wrong-bearer-token", configured) in recorder.calls


def test_the_server_verifies_every_rendering_of_the_query(tmp_path: Path) -> None:
    """SEC-3: through the HTTP endpoint, Time's '+' sent raw or as %2B, and the
    parameters in reverse order, all verify; a '+' turned into a space does not."""
    base = signed(make_uplink(fcnt_up=1)).query
    assert "%2B" in base

    def reverse(query: str) -> str:
        return "&".join(reversed(query.split("&")))

    renderings: dict[str, Callable[[str], str]] = {
        "encoded": lambda q: q,
        "raw-plus": lambda q: q.replace("%2B", "+").replace("%3A", ":"),
        "reversed": reverse,
        "raw-plus-reversed": lambda q: reverse(q.replace("%2B", "+")),
    }

    async def send() -> dict[str, tuple[int, str]]:
        results = {}
        async with _in_process(tmp_path / "spool") as (client, _):
            for number, (name, render) in enumerate(renderings.items(), start=10):
                report = signed(make_uplink(fcnt_up=number))
                query = render(report.query)
                request = client.build_request("POST", f"/thingpark/farm?{query}")
                if "raw-plus" in name:
                    assert b"+" in request.url.query, "the client re-encoded the '+'"
                answer = await _post(client, query, report.body)
                results[name] = (answer.status_code, answer.json().get("status", ""))
            spaced = signed(make_uplink(fcnt_up=99)).query.replace("%2B", "%20")
            refused = await _post(client, spaced, signed(make_uplink(fcnt_up=99)).body)
            results["space"] = (refused.status_code, "refused")
        return results

    results = asyncio.run(send())
    assert results == {
        **dict.fromkeys(renderings, (200, "stored")),
        "space": (401, "refused"),
    }


def test_unsigned_fields_are_stored_and_neither_route_nor_authorise(tmp_path: Path) -> None:
    """SEC-7: a validly signed uplink whose radio metadata and CustomerData were changed
    after signing is stored with the changed values under the application of its path;
    the same frame through another route (other radio metadata) is a duplicate; and
    CustomerData naming another application does not route the report there."""
    dev_eui = "0018B20000000C01"
    model = make_uplink(dev_eui, fcnt_up=31, rssi=-80.0, gateways=1)
    report = signed(model)
    gateways = [Gateway(lrrid=f"FFFF00{i:02X}", chain=0, rssi=-121.5 + i) for i in range(3)]
    rerouted = msgspec.structs.replace(
        model,
        rssi=-121.5,
        snr=-3.25,
        lrrid="FFFF0000",
        lrrs=Lrrs(lrr=gateways),
        dev_lrr_cnt=3,
        customer_data={"application": "barn", "AS_ID": BARN_AS_ID, "role": "admin"},
    )
    body = encode(rerouted, BodyFormat.JSON)

    async def run() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
        async with _in_process(tmp_path / "spool") as (client, _):
            first = await _post(client, report.query, body)
            assert first.status_code == 200, first.text
            stored = (await client.get(f"/api/messages/{first.json()['id']}")).json()
            later = datetime.now(UTC) + timedelta(seconds=2)
            again = await _post(
                client, signed(model, time=later).query, encode(model, BodyFormat.JSON)
            )
            barn = await client.get("/api/messages", params={"application": "barn"})
            return first.json(), stored, again.json(), len(barn.json()["items"])

    first, stored, again, in_barn = asyncio.run(run())
    assert first["status"] == "stored"
    assert stored["application"] == "farm"
    assert stored["rssi"] == -121.5
    assert stored["snr"] == -3.25
    uplink = stored["report"]["DevEUI_uplink"]
    assert uplink["CustomerData"] == rerouted.customer_data
    assert [g["Lrrid"] for g in uplink["Lrrs"]["Lrr"]] == [g.lrrid for g in gateways]
    assert (again["status"], again["id"]) == ("duplicate", first["id"])
    assert in_barn == 0


def test_the_freshness_window_is_each_applications_own(tmp_path: Path) -> None:
    """SEC-4: a report whose query Time is five minutes old is refused as stale by an
    application with a 120 s window and accepted by one with a 600 s window."""
    moment = datetime.now(UTC) - timedelta(minutes=5)
    model = make_uplink(fcnt_up=41)
    farm = signed(model, time=moment)
    barn = sign_report(model, key=AsKey(BARN_KEY), as_id=BARN_AS_ID, time=moment)

    async def run() -> tuple[tuple[int, str], tuple[int, str]]:
        async with _in_process(tmp_path / "spool") as (client, _):
            refused = await _post(client, farm.query, farm.body, "farm")
            accepted = await _post(client, barn.query, barn.body, "barn")
            return (
                (refused.status_code, refused.json().get("error", "")),
                (accepted.status_code, accepted.json().get("status", "")),
            )

    assert asyncio.run(run()) == ((401, "stale_time"), (200, "stored"))


def test_a_token_replayed_with_digits_moved_between_fields_is_stored_once(
    tmp_path: Path,
) -> None:
    """SEC-5: digits moved from payload_hex into FCntUp leave the token valid (the body
    elements are concatenated without separators); the replay is answered 200 as a
    duplicate of the first report and nothing new is stored."""
    original = make_uplink(fcnt_up=1, payload_hex="2345")
    moved = msgspec.structs.replace(original, fcnt_up=123, payload_hex="45")
    report = signed(original)

    async def run() -> tuple[dict[str, Any], dict[str, Any], int]:
        async with _in_process(tmp_path / "spool") as (client, _):
            first = await _post(client, report.query, report.body)
            replay = await _post(client, report.query, encode(moved, BodyFormat.JSON))
            listed = await client.get("/api/messages")
            return first.json(), replay.json(), len(listed.json()["items"])

    first, replay, rows = asyncio.run(run())
    assert first["status"] == "stored"
    assert (replay["status"], replay["id"]) == ("duplicate", first["id"])
    assert rows == 1


def _delivery(correlation_id: str) -> DownlinkSent:
    return DownlinkSent(
        time=datetime.now(UTC).isoformat(timespec="milliseconds"),
        dev_eui="0018B20000000B20",
        fport=2,
        fcnt_dn=7,
        delivery_status=1,
        delivery_failed_cause1="00",
        delivery_failed_cause2="00",
        transmission_slot=1,
        customer_id="100000507",
        correlation_id=correlation_id,
    )


def test_a_refused_delivery_report_changes_no_downlink(tmp_path: Path) -> None:
    """SEC-1: a delivery report naming a downlink's CorrelationID but signed with a wrong
    key, or for another AS_ID, is refused and leaves the downlink as it was; the same
    report correctly signed settles it (so the refusal is what kept it unchanged)."""

    async def run() -> tuple[list[tuple[int, str]], str, str]:
        async with _in_process(tmp_path / "spool") as (client, _):
            queued = await client.post(
                "/api/downlinks",
                json={"application": "farm", "dev_eui": "0018B20000000B20", "fport": 2,
                      "payload_hex": "0a0b"},
            )  # fmt: skip
            assert queued.status_code == 202, queued.text
            downlink = queued.json()
            delivery = _delivery(downlink["correlation_id"])
            forged = [
                signed(delivery, key="ffffffffffffffffffffffffffffffff"),
                signed(delivery, overrides={"AS_ID": BARN_AS_ID}),
            ]
            refusals = []
            for report in forged:
                answer = await _post(client, report.query, report.body)
                refusals.append((answer.status_code, answer.json()["error"]))
            path = f"/api/downlinks/{downlink['id']}"
            after_forgery = (await client.get(path)).json()["status"]
            genuine = signed(delivery)
            assert (await _post(client, genuine.query, genuine.body)).status_code == 200
            return refusals, after_forgery, (await client.get(path)).json()["status"]

    refusals, after_forgery, after_genuine = asyncio.run(run())
    assert refusals == [(401, "token_mismatch"), (403, "bad_as_id")]
    assert after_forgery == "queued"
    assert after_genuine == "sent"


def test_the_downlink_api_needs_the_bearer_token(tmp_path: Path) -> None:
    """SEC-12: sending, listing, showing and cancelling downlinks without the bearer
    token (or with a wrong one) is 401, and nothing is queued or cancelled."""
    body = {"application": "farm", "dev_eui": "0018B20000000B20", "fport": 2, "payload_hex": "0a"}

    async def run() -> tuple[list[int], list[dict[str, Any]]]:
        async with _in_process(tmp_path / "spool") as (client, _):
            queued = (await client.post("/api/downlinks", json=body)).json()
            path = f"/api/downlinks/{queued['id']}"
            statuses = []
            for authorization in ("", "Bearer not-the-token"):
                headers = {"Authorization": authorization}
                for method, url in (("POST", "/api/downlinks"), ("GET", "/api/downlinks"),
                                    ("GET", path), ("DELETE", path)):  # fmt: skip
                    answer = await client.request(
                        method, url, json=body if method == "POST" else None, headers=headers
                    )
                    statuses.append(answer.status_code)
            listed = (await client.get("/api/downlinks")).json()["items"]
            return statuses, listed

    statuses, listed = asyncio.run(run())
    assert statuses == [401] * 8
    assert len(listed) == 1
    assert listed[0]["status"] != "cancelled"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} is not on /metrics"
    return float(match.group(1))


def test_spooled_and_replayed_reports_are_counted(tmp_path: Path) -> None:
    """REL-7: reports acknowledged from the spool while storage is down, and moved into
    storage when it answers again, are counted on /metrics."""

    async def run() -> tuple[list[bool], float, float, float]:
        async with _in_process(tmp_path / "spool") as (client, services):
            store = services.store
            assert isinstance(store, MemoryStore)
            store.available = False
            spooled = []
            for number in range(3):
                report = signed(make_uplink(fcnt_up=number))
                answer = await _post(client, report.query, report.body)
                assert answer.status_code == 200, answer.text
                spooled.append(answer.json().get("spooled", False))
            during = (await client.get("/metrics")).text
            store.available = True
            await services.writer.replay()
            after = (await client.get("/metrics")).text
            return (
                spooled,
                _metric(during, "tpas_reports_spooled_total"),
                _metric(after, "tpas_reports_replayed_total"),
                _metric(after, "tpas_spool_segments"),
            )

    spooled, spooled_total, replayed_total, segments = asyncio.run(run())
    assert spooled == [True, True, True]
    assert spooled_total == 3
    assert replayed_total == 3
    assert segments == 0


# REL-5: the dispatcher's retry schedule, on a clock and jitter of the test's choosing.


@dataclass(frozen=True)
class _Answer:
    status: int
    body: str


class _ScriptedNetwork:
    """The downlink transport port, answering from a script (then accepting)."""

    def __init__(self, *answers: _Answer) -> None:
        self.answers = deque(answers)
        self.queries: list[str] = []

    async def submit(self, url: str, query: str, timeout: float) -> _Answer:
        self.queries.append(query)
        return self.answers.popleft() if self.answers else _Answer(200, "")


def test_transient_refusals_are_retried_after_a_doubling_jittered_delay() -> None:
    """REL-5: after the n-th transient refusal the downlink is not due again before
    ``base * 2**(n-1) * (1 + jitter) / 2`` seconds, and is retried once they pass."""
    base, jitters = 2.0, [0.0, 0.5, 0.99]
    busy = _Answer(350, "<html><body>Token bucket limit reached</body></html>")

    async def run() -> tuple[list[float], list[float], list[int], str]:
        store = MemoryStore()
        await store.open()
        now = [1_700_000_000.0]
        draws = iter(jitters)
        network = _ScriptedNetwork(busy, busy, busy)
        dispatcher = Dispatcher(
            store,
            {"farm": DownlinkTarget("http://ns.test/downlink", AS_ID, AsKey(KEY))},
            network,
            Metrics(),
            clock=lambda: now[0],
            jitter=lambda: next(draws),
            worker="test",
            backoff=Backoff(base=base, cap=300.0),
        )
        created, _ = await store.create_downlink(
            NewDownlink(
                application="farm",
                dev_eui="0018B20000000B20",
                correlation_id="00112233AABBCCDD",
                created_at=now[0],
                fport=2,
                payload_hex="0A",
            )
        )
        waits, early = [], []
        for _ in jitters:
            assert await dispatcher.run_once() == 1
            current = await store.get_downlink(created.id)
            assert current is not None
            assert current.next_attempt_at is not None
            waits.append(current.next_attempt_at - now[0])
            now[0] = current.next_attempt_at - 0.01
            early.append(await dispatcher.run_once())
            now[0] = current.next_attempt_at
        assert await dispatcher.run_once() == 1
        final = await store.get_downlink(created.id)
        assert final is not None
        return waits, [a.at for a in final.attempts], early, final.status

    waits, attempted_at, early, status = asyncio.run(run())
    expected = [base * 2 ** (n - 1) * (0.5 + 0.5 * j) for n, j in enumerate(jitters, start=1)]
    assert waits == pytest.approx(expected)
    gaps = [later - sooner for sooner, later in itertools.pairwise(attempted_at)]
    assert gaps == pytest.approx(expected)
    assert early == [0, 0, 0], "a downlink was retried before its backoff ended"
    assert status == "submitted"


# Real servers.


def _launch(config: Path, directory: Path, url: str, *args: str, verify: Any = True) -> Server:
    """``tpas serve`` with extra arguments, ready once ``url/readyz`` answers 200."""
    log_path = directory / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tpas", "serve", "--config", str(config), *args],
            cwd=directory,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tpas serve exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1, verify=verify).status_code == 200:
                return Server(process, url, directory, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"tpas serve did not become ready: {log_path.read_text()}")


def _fragments(secret: str, size: int = 10) -> set[str]:
    """The secret, lower-cased, and every run of ``size`` of its characters."""
    text = secret.lower()
    return {text} | {text[i : i + size] for i in range(len(text) - size + 1)}


SECRETS: Final = {"AS key": KEY, "old AS key": OLD_KEY, "API token": API_TOKEN}


def _leaks(text: str) -> list[str]:
    """The names of the secrets any fragment of which is in ``text``."""
    lowered = text.lower()
    return [
        name
        for name, secret in SECRETS.items()
        if any(part in lowered for part in _fragments(secret))
    ]


@pytest.fixture
def network() -> Iterator[FakeNetworkServer]:
    """A fake network server that checks downlink tokens."""
    fake = FakeNetworkServer(AS_ID, KEY).start()
    yield fake
    fake.stop()


def test_no_secret_reaches_logs_answers_metrics_or_emitted_urls(
    tmp_path: Path, network: FakeNetworkServer
) -> None:
    """SEC-9: after accepted, duplicate and refused reports, API calls with wrong, missing
    and misplaced credentials, and downlinks the network server refuses, transiently and
    for good, no part of an AS key or the API token is in the debug log, any answer
    body or header, /metrics, or a query tpas sent to the network server."""
    port = free_port()
    extra = f'downlink_url = "{network.url}{V1}"\n[downlinks]\nretry_base = 0.05\n'
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}", extra)
    server = _launch(config, tmp_path, f"http://127.0.0.1:{port}", "--log-level", "debug")
    answers: list[httpx.Response] = []
    try:
        client = server.client
        now = datetime.now(UTC)
        good = signed(make_uplink(fcnt_up=1))
        reports = [
            good,
            good,
            signed(make_uplink(fcnt_up=2), key=OLD_KEY),
            signed(make_uplink(fcnt_up=3), key=KEY.upper()),
            signed(make_uplink(fcnt_up=4), key="ffffffffffffffffffffffffffffffff"),
            signed(make_uplink(fcnt_up=5), overrides={"AS_ID": "someone.else"}),
            signed(make_uplink(fcnt_up=7), time=now - timedelta(hours=1)),
            signed(make_uplink(fcnt_up=8), overrides={"LrnDevEui": "0000000000000001"}),
            signed(make_uplink(fcnt_up=9), BodyFormat.XML),
        ]
        answers += [server.post_report(report) for report in reports]
        answers.append(server.post_report(good, application="nobody"))
        answers.append(
            client.post(f"/thingpark/farm?{good.query}", content=b"<x>", headers={
                "Content-Type": "application/xml"})
        )  # fmt: skip
        for authorization in (None, "Bearer wrong-token", f"Bearer {KEY}", f"Basic {API_TOKEN}"):
            headers = {"Authorization": authorization} if authorization else {}
            anonymous = httpx.get(f"{server.url}/api/messages", headers=headers)
            answers.append(anonymous)
        network.script.extend(
            [v1_error("Token bucket limit reached"), v1_error("Security Check. bad token")]
        )
        downlinks = [
            client.post("/api/downlinks", json={"application": "farm", "dev_eui": dev_eui,
                        "fport": 2, "payload_hex": "0a0b"})
            for dev_eui in ("0018B20000000B20", "0018B20000000B21", "0018B20000000B22")
        ]  # fmt: skip
        answers += downlinks
        answers.append(client.post("/api/downlinks", json={"application": "farm", "fport": 0}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = client.get("/api/downlinks")
            statuses = [d["status"] for d in listed.json()["items"]]
            if len(statuses) == 3 and "queued" not in statuses:
                break
            time.sleep(0.05)
        answers.append(listed)
        answers += [client.get(f"/api/downlinks/{d.json()['id']}") for d in downlinks]
        answers += [client.get(path) for path in ("/api/messages", "/metrics", "/readyz")]
    finally:
        code = server.stop()
    assert code == 0
    assert sorted(statuses) == ["failed", "submitted", "submitted"], statuses
    statuses_seen = {a.status_code for a in answers}
    assert {200, 202, 401, 403, 404, 422} <= statuses_seen
    for answer in answers:
        shown = answer.text + "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
        assert not _leaks(shown), (answer.request.url.path, answer.status_code)
    assert not _leaks(server.log()), "a secret is in the server log"
    assert '"level": "debug"' in server.log()
    emitted = [value for request in network.received for value in request.params.values()]
    assert len(network.received) == 4
    assert not _leaks("\n".join(emitted)), "a secret is in a downlink request"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_is_served_directly_and_the_api_still_needs_its_token(tmp_path: Path) -> None:
    """SEC-12: with tls_certfile and tls_keyfile, tpas answers HTTPS with that certificate
    (reports are stored, the API answers 401 without the bearer token and 200 with it),
    and refuses plain HTTP on the same port."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}")
    text = config.read_text(encoding="utf-8")
    tls = f'port = {port}\ntls_certfile = "{cert}"\ntls_keyfile = "{key}"\n'
    config.write_text(text.replace(f"port = {port}\n", tls, 1), encoding="utf-8")
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    server = _launch(config, tmp_path, url, verify=trust)
    try:
        with httpx.Client(base_url=url, verify=trust, timeout=10) as client:
            report = signed(make_uplink(fcnt_up=1))
            stored = client.post(
                f"/thingpark/farm?{report.query}",
                content=report.body,
                headers={"Content-Type": "application/json"},
            )
            anonymous = client.get("/api/messages")
            authorised = client.get(
                "/api/messages", headers={"Authorization": f"Bearer {API_TOKEN}"}
            )
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        code = server.stop()
    assert (stored.status_code, stored.json()["status"]) == (200, "stored")
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthorized")
    assert authorised.status_code == 200
    assert [m["id"] for m in authorised.json()["items"]] == [stored.json()["id"]]
    assert code == 0


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_finishes_a_request_in_flight_and_refuses_new_connections(
    tmp_path: Path,
) -> None:
    """REL-3: a report whose body is half sent when SIGTERM arrives is still answered
    200 and stored; meanwhile new connections are refused; then the process exits 0."""
    port = free_port()
    database = tmp_path / "tpas.db"
    server = start_server(write_config(tmp_path, port, f"sqlite:///{database}"), tmp_path, port)
    report = signed(make_uplink(fcnt_up=1))
    head = (
        f"POST /thingpark/farm?{report.query} HTTP/1.1\r\nHost: tpas\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(report.body)}\r\n\r\n"
    ).encode()
    half = len(report.body) // 2
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + report.body[:half])
            time.sleep(0.5)  # the head is read: the request is in flight
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while not _refused(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            refusing = _refused(port)
            # Long enough for a server that gives in-flight requests no time to drop it.
            time.sleep(1.0)
            alive = server.process.poll() is None
            sock.sendall(report.body[half:])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    finally:
        code = server.stop()
    assert refusing, "a new connection was accepted after SIGTERM"
    assert alive, "the server exited with a request in flight"
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", answer
    assert msgspec.json.decode(rest.partition(b"\r\n\r\n")[2])["status"] == "stored"
    assert code == 0, server.log()
    with sqlite3.connect(database) as connection:
        tokens = [row[0] for row in connection.execute("SELECT token FROM reports")]
    assert tokens == [report.token]
