"""The simulated network server's downlink side, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest

from tests.simulator.conftest import AS_ID, KEY, KEY_TEXT, run_tpas, start_receiver
from tpas.protocol import (
    DOWNLINK_PATH_V1,
    DOWNLINK_PATH_V2,
    BodyFormat,
    DownlinkParams,
    DownlinkSent,
    check_report,
    format_for_content_type,
    sign_downlink,
)
from tpas.protocol.answers import Outcome, classify_answer
from tpas.simulator import Fleet, NetworkServer, NsFaults

DEV_EUI: Final = "70B3D57ED0000001"
VERSIONS = [pytest.param(False, id="v1"), pytest.param(True, id="v2")]
QUEUED_V1: Final = "<html><body>Request queued by LRC</body></html>"


async def post(ns: NetworkServer, query: str, *, v2: bool) -> httpx.Response:
    """POST a downlink query to the network server, as tpas's client does."""
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{ns.downlink_url(v2=v2)}?{query}",
            content=b"",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )


def post_once(query: str, *, v2: bool, **options: Any) -> httpx.Response:
    """Start a network server, POST one query, stop it; the answer."""

    async def main() -> httpx.Response:
        async with NetworkServer(as_id=AS_ID, key=KEY, **options) as ns:
            return await post(ns, query, v2=v2)

    return asyncio.run(main())


def signed_query(as_id: str = AS_ID, time: datetime | None = None, **params: Any) -> str:
    """A downlink query signed by tpas's protocol layer."""
    fields: dict[str, Any] = {"dev_eui": DEV_EUI, "fport": 10, "payload_hex": "0102"}
    fields.update(params)
    return sign_downlink(
        DownlinkParams(**fields),
        as_id=as_id,
        key=KEY,
        time=time or datetime.now(UTC),
    ).query


def sign_with_cli(*extra: str, as_id: str = AS_ID) -> str:
    """What ``tpas token sign-downlink`` prints (Time: now)."""
    run = run_tpas(
        "token", "sign-downlink", "--dev-eui", DEV_EUI, "--fport", "10", "--payload",
        "0a0b0c", "--as-id", as_id, "--key", KEY_TEXT, *extra,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def assert_accepted(answer: httpx.Response, *, v2: bool) -> None:
    """The answer is ThingPark's acceptance for the endpoint generation."""
    if v2:
        assert answer.status_code == 202
    else:
        assert answer.status_code == 200
        assert answer.text == QUEUED_V1
        assert answer.headers["content-type"] == "text/html"


def assert_refused(answer: httpx.Response, code: int, message: str, *, v2: bool) -> None:
    """The answer is ThingPark's refusal ``code`` / ``message`` for the generation."""
    if v2:
        assert answer.status_code == 409
        body = answer.json()
        assert (body["code"], body["message"]) == (code, message)
    else:
        assert answer.status_code == (404 if code == 115 else 350)
        assert answer.text == f"<html><body>{message}</body></html>"


@pytest.mark.parametrize("v2", VERSIONS)
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((), id="plain"),
        pytest.param(("--correlation-id", "0123456789ABCDEF"), id="correlation-id"),
        pytest.param(("--confirmed", "--flush-queue"), id="confirmed-flush"),
        pytest.param(("--validity-time", "600"), id="validity-seconds"),
        pytest.param(("--fcnt-dn", "5"), id="fcnt-dn"),
    ],
)
def test_accepts_what_tpas_token_sign_downlink_prints(extra: tuple[str, ...], v2: bool) -> None:
    """The query printed by the real ``tpas token sign-downlink`` is accepted on both
    endpoint generations."""
    assert_accepted(post_once(sign_with_cli(*extra), v2=v2, max_deviation=60.0), v2=v2)


def _tampered(query: str) -> str:
    head, _, token = query.rpartition("&Token=")
    return f"{head}&Token={token[:-1]}{'1' if token[-1] == '0' else '0'}"


@pytest.mark.parametrize("v2", VERSIONS)
@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        pytest.param("tampered", 111, "Security Check. bad token", id="tampered-token"),
        pytest.param("as-id", 107, "Security Check. bad AS_ID", id="wrong-as-id"),
        pytest.param(
            "stale", 110, "Security Check. Invalid downlink frame timestamp", id="stale-time"
        ),
    ],
)
def test_refuses_a_bad_cli_signature_with_thingparks_error(
    case: str, code: int, message: str, v2: bool
) -> None:
    """A tampered token, a foreign AS_ID or a stale Time from the real CLI is refused with
    the v1 message (350) or the v2 code (409) ThingPark uses."""
    if case == "tampered":
        query = _tampered(sign_with_cli())
    elif case == "as-id":
        query = sign_with_cli(as_id="TWA_999.1.AS")
    else:
        query = sign_with_cli("--time", "2016-01-11T14:28:00.333+02:00")
    assert_refused(post_once(query, v2=v2, max_deviation=60.0), code, message, v2=v2)


@pytest.mark.parametrize("v2", VERSIONS)
@pytest.mark.parametrize(
    ("query", "code"),
    [
        pytest.param("DevEUI=70b3d57ed0000001&FPort=1&Payload=00", 100, id="lower-case-deveui"),
        pytest.param(f"DevEUI={DEV_EUI}&FPort=1&Payload=00", 105, id="no-as-id"),
        pytest.param(f"DevEUI={DEV_EUI}&FPort=1&Payload=00&AS_ID={AS_ID}", 106, id="no-time"),
        pytest.param(
            f"DevEUI={DEV_EUI}&AS_ID={AS_ID}&Time=yesterday&Token={'0' * 64}", 109, id="bad-time"
        ),
    ],
)
def test_refuses_malformed_requests_in_order(query: str, code: int, v2: bool) -> None:
    """Requests missing what ThingPark requires are refused with the documented code."""
    answer = post_once(query, v2=v2)
    if v2:
        assert answer.json()["code"] == code
    else:
        assert answer.status_code == 350


@pytest.mark.parametrize("v2", VERSIONS)
@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="plain"),
        pytest.param({"confirmed": True, "correlation_id": "00000000000000FF"}, id="confirmed"),
        pytest.param({"validity_time": "2099-01-01T00:00:00.000+00:00"}, id="validity-iso"),
        pytest.param({"payload_hex": "ab" * 250}, id="largest-payload"),
    ],
)
def test_accepts_what_the_protocol_layer_signs(params: dict[str, Any], v2: bool) -> None:
    """A query signed by tpas's own signer (what the dispatcher sends) is accepted."""
    assert_accepted(post_once(signed_query(**params), v2=v2), v2=v2)


def test_a_literal_plus_in_the_time_is_read_as_a_space() -> None:
    """An unencoded '+' in the Time offset breaks the request, as on ThingPark (SPEC.md
    §9.11): the Time no longer parses."""
    query = signed_query().replace("%2B", "+")
    assert_refused(
        post_once(query, v2=True), 109, "Security Check. malformed ISO8601 time", v2=True
    )


@pytest.mark.parametrize("v2", VERSIONS)
@pytest.mark.parametrize(
    ("faults", "code", "message", "outcome"),
    [
        pytest.param("busy=1", 115, "No Base Station Available", Outcome.TRANSIENT, id="busy"),
        pytest.param(
            "refuse=1", 114, "Downlink transmission disabled", Outcome.PERMANENT, id="refuse"
        ),
        pytest.param(
            "timeout=1,hold=0.2",
            115,
            "No Base Station Available",
            Outcome.TRANSIENT,
            id="timeout",
        ),
    ],
)
def test_injected_errors_are_thingparks_and_classified_by_tpas(
    faults: str, code: int, message: str, outcome: Outcome, v2: bool
) -> None:
    """Injected errors answer like ThingPark, and tpas classifies them as transient or
    permanent as intended."""
    answer = post_once(signed_query(), v2=v2, faults=NsFaults.parse(faults))
    assert_refused(answer, code, message, v2=v2)
    assert classify_answer(answer.status_code, answer.text).outcome is outcome


def test_an_old_fcnt_dn_is_refused_with_the_expected_counter() -> None:
    """An AS-chosen FCntDn below the device's counter is refused (101) with the counter
    expected; the next one up is accepted."""

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with NetworkServer(as_id=AS_ID, key=KEY, class_c_delay=0.0) as ns:
            first = await post(ns, signed_query(fcnt_dn=4), v2=True)
            await ns.drain()
            again = await post(ns, signed_query(fcnt_dn=4), v2=True)
            bigger = await post(ns, signed_query(fcnt_dn=5), v2=True)
            return first, again, bigger

    first, again, bigger = asyncio.run(main())
    assert first.status_code == 202
    assert again.json() == {
        "code": 101,
        "message": "Downlink counter value already used. Expected=5",
        "expected": 5,
    }
    assert bigger.status_code == 202


@pytest.mark.parametrize("fmt", [pytest.param(f, id=f.value) for f in BodyFormat])
@pytest.mark.parametrize(
    ("device_class", "slot"), [pytest.param("A", 1, id="class-A"), pytest.param("C", 2, id="C")]
)
def test_delivery_is_reported_signed_with_the_correlation_id(
    device_class: str, slot: int, fmt: BodyFormat
) -> None:
    """Each accepted downlink comes back as a signed DevEUI_downlink_Sent echoing its
    CorrelationID: class A at the device's next uplink, class C after a short delay."""

    async def main() -> list[tuple[bytes, str, str]]:
        receiver, server = await start_receiver()
        report_url = f"http://127.0.0.1:{server.port}/thingpark/farm"
        try:
            async with NetworkServer(
                as_id=AS_ID, key=KEY, report_url=report_url, fmt=fmt, class_c_delay=0.05
            ) as ns:
                ns.register(DEV_EUI, device_class)
                for number in range(2):
                    query = signed_query(correlation_id=f"00000000000000A{number}")
                    assert (await post(ns, query, v2=True)).status_code == 202
                await ns.drain()
                if device_class == "A":
                    assert not receiver.requests  # nothing before an uplink
                    device = Fleet(2, random.Random(1)).devices[1]
                    for _ in range(2):
                        ns.on_uplink(device.uplink(datetime.now(UTC)))
                        await ns.drain()
                assert ns.stats.confirmed == 2
        finally:
            await server.stop()
        return [(r.body, r.query, r.header("content-type") or "") for r in receiver.requests]

    posted = asyncio.run(main())
    assert len(posted) == 2
    for number, (body, query, content_type) in enumerate(posted):
        assert format_for_content_type(content_type) is not None
        result = check_report(
            body, fmt, query, [KEY], as_id=AS_ID, now=datetime.now(UTC), max_drift=60.0
        )
        assert result.verdict.ok, result.verdict.detail
        report = result.model
        assert isinstance(report, DownlinkSent)
        assert report.correlation_id == f"00000000000000A{number}"
        assert (report.dev_eui, report.fport, report.fcnt_dn) == (DEV_EUI, 10, number)
        assert report.delivery_status == 1
        assert report.transmission_slot == slot
        assert report.delivery_failed_cause1 == "00"


def test_flushing_empties_the_queue() -> None:
    """FlushDownlinkQueue=1 without a payload is accepted and drops what was queued."""

    async def main() -> tuple[int, int]:
        async with NetworkServer(as_id=AS_ID, key=KEY) as ns:
            ns.register(DEV_EUI, "A")
            await post(ns, signed_query(), v2=False)
            queued = ns.queued(DEV_EUI)
            flush = signed_query(fport=None, payload_hex=None, flush_queue=True)
            assert (await post(ns, flush, v2=False)).status_code == 200
            return queued, ns.queued(DEV_EUI)

    assert asyncio.run(main()) == (1, 0)


def test_unknown_paths_and_methods_are_refused() -> None:
    """Only POST to the two downlink paths is served."""

    async def main() -> tuple[int, int, int]:
        async with NetworkServer(as_id=AS_ID, key=KEY) as ns, httpx.AsyncClient() as client:
            base = f"http://127.0.0.1:{ns.port}"
            other = await client.post(f"{base}/elsewhere")
            get_v1 = await client.get(f"{base}{DOWNLINK_PATH_V1}")
            get_v2 = await client.get(f"{base}{DOWNLINK_PATH_V2}")
            return other.status_code, get_v1.status_code, get_v2.status_code

    assert asyncio.run(main()) == (404, 405, 405)


def test_stale_time_uses_the_configured_deviation() -> None:
    """A Time 30 s old passes a 60 s deviation and fails a 10 s one (110)."""
    old = datetime.now(UTC) - timedelta(seconds=30)
    assert post_once(signed_query(time=old), v2=True, max_deviation=60.0).status_code == 202
    refused = post_once(signed_query(time=old), v2=True, max_deviation=10.0)
    assert json.loads(refused.text)["code"] == 110
