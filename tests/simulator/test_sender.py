"""Reports are posted the way ThingPark posts them, and never retried."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.simulator.conftest import AS_ID, KEY, NOW, Request, start_receiver
from tpas.protocol import BodyFormat
from tpas.simulator import Answer, Fleet, Sender
from tpas.testing import sign_report


def post(fmt: BodyFormat, status: int) -> tuple[list[Request], Answer, str, bytes]:
    """Post one signed uplink to a receiver answering ``status``."""

    async def main() -> tuple[list[Request], Answer, str, bytes]:
        receiver, server = await start_receiver(status)
        uplink = Fleet(1, random.Random(2)).devices[0].uplink(NOW)
        signed = sign_report(uplink, key=KEY, as_id=AS_ID, time=NOW, fmt=fmt)
        try:
            async with Sender(f"http://127.0.0.1:{server.port}/thingpark/farm") as sender:
                answer = await sender.post(signed)
        finally:
            await server.stop()
        return receiver.requests, answer, signed.query, signed.body

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        pytest.param(BodyFormat.JSON, "application/json", id="json"),
        pytest.param(BodyFormat.JSON_UNTYPED, "application/json", id="json-untyped"),
        pytest.param(BodyFormat.XML, "application/xml", id="xml"),
    ],
)
def test_a_report_is_posted_like_thingpark(fmt: BodyFormat, content_type: str) -> None:
    """One POST to the report URL with the signed query as built, the body, the content
    type of the format, ThingPark's User-Agent and ``Accept: */*``."""
    requests, answer, query, body = post(fmt, 204)
    assert answer.ok
    (request,) = requests
    assert (request.method, request.path) == ("POST", "/thingpark/farm")
    assert request.query == query
    assert request.body == body
    assert request.header("content-type") == content_type
    assert request.header("user-agent") == "ACTILITY-LRCLRN-DEVICE-AGENT/1.0"
    assert request.header("accept") == "*/*"
    assert request.header("accept-encoding") is None


@pytest.mark.parametrize("status", [pytest.param(500, id="500"), pytest.param(503, id="503")])
def test_a_refused_report_is_not_retried(status: int) -> None:
    """A non-2xx answer is the report's fate: one request only, as ThingPark does."""
    requests, answer, _, _ = post(BodyFormat.JSON, status)
    assert len(requests) == 1
    assert not answer.ok
    assert answer.reason == f"http_{status}"


def test_an_unreachable_server_is_an_answer_not_an_exception() -> None:
    """A refused connection comes back as an error answer, without raising."""

    async def main() -> Answer:
        _, server = await start_receiver()
        url = f"http://127.0.0.1:{server.port}/thingpark/farm"
        await server.stop()
        uplink = Fleet(1, random.Random(2)).devices[0].uplink(NOW)
        async with Sender(url, timeout=2.0) as sender:
            return await sender.post(sign_report(uplink, key=KEY, as_id=AS_ID, time=NOW))

    answer = asyncio.run(main())
    assert answer.status is None
    assert answer.reason == "connect_error"
