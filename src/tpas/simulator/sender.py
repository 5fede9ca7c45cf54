"""Posting reports the way ThingPark's network server does (SPEC.md §2.1, §7).

``POST <url>?LrnDevEui=..&LrnFPort=..&LrnInfos=..&AS_ID=..&Time=..&Token=..`` (Time
percent-encoded), with ``Content-Type``, ``User-Agent: ACTILITY-LRCLRN-DEVICE-AGENT/1.0``
and ``Accept: */*``. Like ThingPark's Basic HTTPS tunnel, nothing is retried: a non-2xx
answer or a timeout is the report's fate (SPEC.md §2.3).

One difference, on purpose: ThingPark sends ``Connection: close``; the simulator keeps
connections alive, because it also drives benchmarks and a new TCP connection per report
would measure the handshake rather than the application server. A request waits for a
free connection of its pool (``max_connections`` in all).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Final, Self

import httpx
import msgspec

from tpas.testing import SignedReport

__all__ = ["USER_AGENT", "Answer", "Receipt", "Sender"]

USER_AGENT: Final = "ACTILITY-LRCLRN-DEVICE-AGENT/1.0"
_PER_POOL: Final = 2


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: a status and the JSON body (when there was one), or a transport
    error; always the latency in seconds."""

    status: int | None
    body: dict[str, Any] | None
    latency: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer: delivered, for ThingPark."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def reason(self) -> str:
        """The refusal's reason code (the body's ``error``), else ``http_<status>``, else
        the transport error."""
        if self.status is None:
            return self.error or "no_answer"
        if self.body is not None and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return f"http_{self.status}"

    @property
    def report_id(self) -> int | None:
        """The id tpas gave the report (``{"status", "id", "type"}``), when it said."""
        value = self.body.get("id") if self.body is not None else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def status_text(self) -> str | None:
        """The body's ``status`` (``stored``, ``duplicate``), when it said."""
        value = self.body.get("status") if self.body is not None else None
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A report the application server acknowledged (2xx): enough to look it up later."""

    report_id: int | None
    """The id the answer gave (tpas: ``{"status", "id", "type"}``), when it gave one."""
    kind: str
    dev_eui: str
    time: str | None
    """The report's body ``Time``."""


class Sender:
    """Posts signed reports to one URL over kept-alive connections.

    The connections are spread over several small httpx pools, used in turn: httpcore's
    pool gets slower as it grows (it scans its connections on every request), and small
    pools of :data:`_PER_POOL` connections measured about three times faster than one
    pool of 64 on loopback. An injected ``client`` is used alone.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        max_connections: int = 64,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        if client is not None:
            clients = [client]
        else:
            per_pool = min(_PER_POOL, max_connections)
            limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
            clients = [
                httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False)
                for _ in range(max(1, -(-max_connections // per_pool)))
            ]
        for each in clients:
            headers = each.headers
            for name in ("Accept-Encoding", "User-Agent", "Accept"):
                headers.pop(name, None)
            headers["User-Agent"] = USER_AGENT
            headers["Accept"] = "*/*"
        self._clients = clients
        self._next = itertools.cycle(clients)

    async def post(self, signed: SignedReport) -> Answer:
        """POST one report; never raises for a refusal or a network failure."""
        started = time.perf_counter()
        try:
            response = await next(self._next).post(
                f"{self.url}?{signed.query}",
                content=signed.body,
                headers={"Content-Type": signed.content_type},
            )
        except httpx.TimeoutException:
            return Answer(None, None, time.perf_counter() - started, "timeout")
        except httpx.HTTPError as exc:
            return Answer(None, None, time.perf_counter() - started, _error_name(exc))
        latency = time.perf_counter() - started
        return Answer(response.status_code, _json(response.content), latency)

    async def aclose(self) -> None:
        """Close the connections."""
        for client in self._clients:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _json(content: bytes) -> dict[str, Any] | None:
    if not content.lstrip().startswith(b"{"):
        return None
    try:
        data = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None
    return data if isinstance(data, dict) else None


def _error_name(exc: httpx.HTTPError) -> str:
    """``connect_error``, ``read_error``, ... from the httpx class name."""
    name = type(exc).__name__
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
    return snake.removesuffix("_exception") or "network_error"
