"""The network server's downlink side: takes downlinks from the AS, confirms them later.

``POST /thingpark/lrc/rest/downlink`` (v1) and ``/thingpark/lrc/rest/v2/downlink`` (v2),
checked by :func:`~tpas.simulator.downlink_check.check_downlink`, answer like ThingPark
(SPEC.md §4.4): v1 ``200 <html><body>Request queued by LRC</body></html>``, ``350`` with
the message in HTML, ``404 No Base Station Available``; v2 ``202``, or ``409`` with a JSON
``{"code", "message"}``.

An accepted downlink joins its device's queue. A class A device gets it at its next
uplink (:meth:`NetworkServer.on_uplink`, one downlink per uplink, slot RX1); a class C
device after ``class_c_delay`` seconds (slot RX2). Each delivery is reported to the AS as
a ``DevEUI_downlink_Sent`` (DeliveryStatus 1, causes ``00``, the CorrelationID echoed,
the network server's FCntDn), signed like any report and posted to ``report_url``.

Injected faults (:class:`NsFaults`), drawn per request that passed every check:
``busy`` answers "No Base Station Available" (v1 404, v2 409 code 115: transient);
``refuse`` answers "Downlink transmission disabled" (v1 350, v2 409 code 114:
permanent); ``timeout`` holds the request ``hold`` seconds (past the client's timeout)
before answering 115. None of them queues the downlink.

Use it with ``async with NetworkServer(...) as ns:`` (or :meth:`~NetworkServer.start` /
:meth:`~NetworkServer.stop`); ``ns.downlink_url()`` is what tpas's ``downlink_url`` takes.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Self

from tpas.errors import InputError
from tpas.protocol import (
    DOWNLINK_PATH_V1,
    DOWNLINK_PATH_V2,
    AsKey,
    BodyFormat,
    DownlinkSent,
    Uplink,
    format_time,
)
from tpas.simulator.devices import CUSTOMER_ID, GATEWAYS, LRCID
from tpas.simulator.downlink_check import DownlinkOrder, NsError, check_downlink, ns_error
from tpas.simulator.http_server import LoopbackServer
from tpas.simulator.sender import Receipt, Sender
from tpas.testing import sign_report

__all__ = ["NetworkServer", "NsFaults", "NsStats"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_QUEUED_V1: Final = b"<html><body>Request queued by LRC</body></html>"
_RX2_MHZ: Final = 869.525


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NsFaults:
    """Fractions of valid downlink requests answered with an error instead."""

    busy: float = 0.0
    refuse: float = 0.0
    timeout: float = 0.0
    hold: float = 15.0
    """Seconds a ``timeout`` request is held before the answer."""

    @classmethod
    def parse(cls, text: str) -> NsFaults:
        """Read ``"busy=0.05,refuse=0.01,timeout=0.01,hold=15"``."""
        values: dict[str, float] = {}
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip()
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not sep or name not in ("busy", "refuse", "timeout", "hold") or number < 0:
                raise InputError(f"--ns-faults: expected busy|refuse|timeout|hold=NUMBER: {item!r}")
            values[name] = number
        faults = cls(**values)
        if faults.busy + faults.refuse + faults.timeout > 1:
            raise InputError("--ns-faults: the fractions add up to more than 1")
        return faults


@dataclass(slots=True)
class NsStats:
    """What the network server saw and did."""

    received: int = 0
    accepted: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """Genuine refusals, by ``"<code> <message>"``: the AS sent something wrong."""
    delivered: int = 0
    confirmed: int = 0
    """Deliveries whose ``DevEUI_downlink_Sent`` the AS acknowledged (2xx)."""
    report_failures: Counter[str] = field(default_factory=Counter)
    expired: int = 0
    receipts: list[Receipt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No genuine refusal, every delivery report acknowledged."""
        return not self.refused and not self.report_failures

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "received": self.received,
            "accepted": self.accepted,
            "injected": dict(sorted(self.injected.items())),
            "refused": dict(sorted(self.refused.items())),
            "delivered": self.delivered,
            "confirmed": self.confirmed,
            "report_failures": dict(sorted(self.report_failures.items())),
            "expired": self.expired,
        }

    def line(self) -> str:
        """A short live-progress segment."""
        injected = sum(self.injected.values())
        refused = sum(self.refused.values())
        return (
            f"downlinks rx {self.received} queued {self.accepted} injected {injected} "
            f"refused {refused} sent {self.delivered}"
        )


@dataclass(slots=True)
class _Device:
    device_class: str
    queue: deque[DownlinkOrder] = field(default_factory=deque)
    next_fcnt_dn: int = 0
    last_uplink: Uplink | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class NetworkServer:
    """A simulated ThingPark network server, downlink side, on a loopback port."""

    def __init__(
        self,
        *,
        as_id: str,
        key: AsKey,
        report_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        fmt: BodyFormat = BodyFormat.JSON,
        max_deviation: float = 10.0,
        faults: NsFaults | None = None,
        class_c_delay: float = 1.0,
        unknown_class: str = "C",
        customer_id: str = CUSTOMER_ID,
        seed: int | None = None,
        clock: Callable[[], datetime] = _utcnow,
        timeout: float = 10.0,
    ) -> None:
        self.as_id = as_id
        self.key = key
        self.report_url = report_url
        self.fmt = fmt
        self.max_deviation = max_deviation
        self.faults = faults or NsFaults()
        self.class_c_delay = class_c_delay
        self.unknown_class = unknown_class
        self.customer_id = customer_id
        self.rng = random.Random(seed)  # the injected faults' draws
        self.clock = clock
        self.stats = NsStats()
        self._http = LoopbackServer(self, host=host, port=port)
        self._sender = (
            Sender(report_url, timeout=timeout, max_connections=4) if report_url else None
        )
        self._devices: dict[str, _Device] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._http.port

    def downlink_url(self, *, v2: bool = False) -> str:
        """The downlink endpoint's URL, v1 unless ``v2``."""
        path = DOWNLINK_PATH_V2 if v2 else DOWNLINK_PATH_V1
        return f"http://{self._http.host}:{self.port}{path}"

    async def start(self) -> int:
        """Start serving; returns the bound port."""
        return await self._http.start()

    async def drain(self, timeout: float = 15.0) -> None:
        """Wait (at most ``timeout`` s) for the deliveries under way, class C ones included."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def stop(self) -> None:
        """Stop serving; deliveries not done yet are abandoned."""
        await self._http.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        if self._sender is not None:
            await self._sender.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- devices ----------------------------------------------------------------------------

    def register(self, dev_eui: str, device_class: str) -> None:
        """Declare a device and its class (``A`` or ``C``)."""
        self._device(dev_eui).device_class = device_class

    def _device(self, dev_eui: str) -> _Device:
        key = dev_eui.upper()
        device = self._devices.get(key)
        if device is None:
            device = self._devices[key] = _Device(self.unknown_class)
        return device

    def downlink_counter(self, dev_eui: str) -> int:
        """The FCntDn the device's next downlink will carry."""
        return self._device(dev_eui).next_fcnt_dn

    def queued(self, dev_eui: str) -> int:
        """How many downlinks wait for the device."""
        return len(self._device(dev_eui).queue)

    def on_uplink(self, uplink: Uplink) -> None:
        """The device sent a frame: a class A device's queue sends one downlink in RX1."""
        device = self._device(uplink.dev_eui)
        device.last_uplink = uplink
        if device.queue and device.device_class != "C":
            self._spawn(self._deliver(uplink.dev_eui, slot=1, delay=0.0))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the endpoint -----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI application."""
        if scope["type"] != "http":
            return
        more = True
        while more:  # the body is empty or ignored (SPEC.md §4.1)
            message = await receive()
            more = message.get("more_body", False) and message["type"] == "http.request"
        path = scope["path"]
        if path not in (DOWNLINK_PATH_V1, DOWNLINK_PATH_V2):
            await _answer(send, 404, b"not found", b"text/plain")
            return
        if scope["method"] != "POST":
            await _answer(send, 405, b"use POST", b"text/plain")
            return
        v2 = path == DOWNLINK_PATH_V2
        raw = bytes(scope.get("query_string", b"")).decode("latin-1")
        result = self._receive(raw)
        if isinstance(result, NsError):
            await _refuse(send, result, v2=v2)
            return
        fault = self._draw_fault()
        if fault is not None:
            self.stats.injected[fault] += 1
            if fault == "timeout":
                await asyncio.sleep(self.faults.hold)
            await _refuse(send, ns_error(114 if fault == "refuse" else 115), v2=v2)
            return
        self._accept(result)
        if v2:
            await _answer(send, 202, b"", b"text/plain")
        else:
            await _answer(send, 200, _QUEUED_V1, b"text/html")

    def _receive(self, raw: str) -> DownlinkOrder | NsError:
        self.stats.received += 1
        result = check_downlink(
            raw,
            as_id=self.as_id,
            key=self.key.reveal(),
            now=self.clock(),
            max_deviation=self.max_deviation,
            counter=self.downlink_counter,
        )
        if isinstance(result, NsError):
            self.stats.refused[f"{result.code} {result.message}"] += 1
        return result

    def _draw_fault(self) -> str | None:
        point = self.rng.random()
        for name, rate in (
            ("busy", self.faults.busy),
            ("refuse", self.faults.refuse),
            ("timeout", self.faults.timeout),
        ):
            if point < rate:
                return name
            point -= rate
        return None

    def _accept(self, order: DownlinkOrder) -> None:
        self.stats.accepted += 1
        device = self._device(order.dev_eui)
        if order.flush_queue:
            device.queue.clear()
        if order.payload_hex is None:
            return
        device.queue.append(order)
        if device.device_class == "C":
            self._spawn(self._deliver(order.dev_eui, slot=2, delay=self.class_c_delay))

    # -- delivery ---------------------------------------------------------------------------

    async def _deliver(self, dev_eui: str, *, slot: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        device = self._device(dev_eui)
        async with device.lock:
            if not device.queue:
                return
            order = device.queue.popleft()
            now = self.clock()
            if order.expires_at is not None and now >= order.expires_at:
                self.stats.expired += 1
                return
            fcnt_dn = order.fcnt_dn if order.fcnt_dn is not None else device.next_fcnt_dn
            device.next_fcnt_dn = fcnt_dn + 1
            report = self._sent_report(order, device.last_uplink, fcnt_dn, slot, now)
            self.stats.delivered += 1
            await self._report(report, now)

    def _sent_report(
        self, order: DownlinkOrder, last: Uplink | None, fcnt_dn: int, slot: int, now: datetime
    ) -> DownlinkSent:
        rx1 = slot == 1 and last is not None
        return DownlinkSent(
            time=format_time(now),
            dev_eui=order.dev_eui,
            fport=order.fport,
            fcnt_dn=fcnt_dn,
            fcnt_up=last.fcnt_up if last is not None else None,
            lrcid=LRCID,
            spreading_factor=(last.spreading_factor if rx1 and last else None) or 12,
            sub_band="G1",
            channel=(last.channel if rx1 and last else None) or "LC0",
            lrrid=(last.lrrid if last is not None else None) or GATEWAYS[0].lrrid,
            delivery_status=1,
            delivery_failed_cause1="00",
            delivery_failed_cause2="00",
            delivery_failed_cause3="00",
            transmission_slot=slot,
            frequency=(last.frequency if rx1 and last else None) or _RX2_MHZ,
            correlation_id=order.correlation_id,
            customer_id=self.customer_id,
            customer_data={"alr": {"pro": "TPAS/SIM", "ver": "1"}},
        )

    async def _report(self, report: DownlinkSent, now: datetime) -> None:
        if self._sender is None:
            return
        signed = sign_report(report, key=self.key, as_id=self.as_id, time=now, fmt=self.fmt)
        answer = await self._sender.post(signed)
        if answer.ok:
            self.stats.confirmed += 1
            self.stats.receipts.append(
                Receipt(answer.report_id, report.kind, report.dev_eui, report.time)
            )
        else:
            self.stats.report_failures[answer.reason] += 1


async def _answer(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse(send: Send, error: NsError, *, v2: bool) -> None:
    if v2:
        await _answer(send, 409, error.v2_body(), b"application/json")
    else:
        await _answer(send, error.v1_status, error.v1_body(), b"text/html")
