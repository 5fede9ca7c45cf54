"""A simulation run: the fleet's reports posted at a steady rate, every answer judged.

Shots are fired on a fixed schedule (``rate`` per second, a backlog of at most one second
caught up), at most ``concurrency`` in flight. Each answer is compared with the shot's
expectation (:mod:`tpas.simulator.traffic`) and counted (:mod:`tpas.simulator.progress`);
every acknowledged report leaves a :class:`~tpas.simulator.sender.Receipt`, so a caller
can later check that the application server really kept it. With a network server, every
uplink opens the device's receive window for a queued downlink (class A).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tpas.protocol import AsKey, BodyFormat, Uplink
from tpas.simulator.devices import Fleet
from tpas.simulator.network_server import NetworkServer
from tpas.simulator.progress import Tally
from tpas.simulator.sender import Answer, Receipt, Sender
from tpas.simulator.traffic import Expectation, Fault, Faults, Mix, Outcome, Planner, Shot

__all__ = ["Simulation", "SimulationConfig"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """What to simulate and against which application server URL."""

    url: str
    """The AS report URL, e.g. ``http://127.0.0.1:8080/thingpark/farm``."""
    as_id: str
    key: AsKey
    devices: int = 10
    rate: float = 10.0
    """Reports per second, all devices together (re-sent duplicates come on top)."""
    seconds: float | None = None
    """Run time; ``None`` runs until stopped."""
    fmt: BodyFormat = BodyFormat.JSON
    mix: Mix = field(default_factory=Mix.parse)
    faults: Faults = field(default_factory=Faults)
    max_drift: float = 120.0
    """The server's freshness window, to know which Times it must refuse."""
    timeout: float = 10.0
    concurrency: int = 64
    seed: int | None = None
    class_c_every: int = 4


class Simulation:
    """One run; :meth:`run` returns the summary (also :meth:`summary` at any time)."""

    def __init__(
        self,
        config: SimulationConfig,
        *,
        network_server: NetworkServer | None = None,
        sender: Sender | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if config.rate <= 0:
            raise ValueError("the rate must be positive")
        self.config = config
        self.network_server = network_server
        self.clock = clock
        self.rng = random.Random(config.seed)
        self.fleet = Fleet(config.devices, self.rng, class_c_every=config.class_c_every)
        self.tally = Tally()
        self.receipts: list[Receipt] = []
        self._sender = sender
        self.planner = Planner(
            self.fleet,
            as_id=config.as_id,
            key=config.key,
            fmt=config.fmt,
            mix=config.mix,
            faults=config.faults,
            max_drift=config.max_drift,
            rng=self.rng,
            downlink_counter=network_server.downlink_counter if network_server else None,
        )
        if network_server is not None:
            for device in self.fleet:
                network_server.register(device.dev_eui, device.device_class)

    async def run(self, stop: asyncio.Event | None = None) -> dict[str, Any]:
        """Send until ``seconds`` pass or ``stop`` is set, wait for the answers still due,
        and return the summary."""
        stop = stop or asyncio.Event()
        config = self.config
        sender = self._sender or Sender(
            config.url, timeout=config.timeout, max_connections=config.concurrency
        )
        try:
            await self._schedule(sender, stop)
        finally:
            if self._sender is None:
                await sender.aclose()
        return self.summary()

    async def _schedule(self, sender: Sender, stop: asyncio.Event) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(config.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / config.rate
        start = loop.time()
        deadline = start + config.seconds if config.seconds is not None else None
        self.tally.restart()
        fired = 0

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slots.release()

        while not stop.is_set():
            now = loop.time()
            if deadline is not None and now >= deadline:
                break
            due = start + fired * interval
            if due > now:
                wait = (min(due, deadline) if deadline is not None else due) - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                continue
            if now - due > 1.0:  # behind schedule: catch up one second at most
                start = now - 1.0 - fired * interval
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            task = asyncio.create_task(self._fire(sender, self.planner.next(self.clock())))
            tasks.add(task)
            task.add_done_callback(done)
            fired += 1
        if tasks:
            await asyncio.gather(*tasks)
        self.tally.finish()

    async def _fire(self, sender: Sender, shot: Shot) -> None:
        answer = await sender.post(shot.request)
        self._judge(
            shot, shot.expect, answer, label=None if shot.fault is Fault.DUPLICATE else shot.fault
        )
        ns = self.network_server
        # A late frame's receive windows closed long ago: no downlink rides on it.
        window = shot.kind == "uplink" and shot.fault is not Fault.LATE
        if ns is not None and window and isinstance(shot.report, Uplink):
            ns.on_uplink(shot.report)
        if shot.fault is Fault.DUPLICATE:
            expect = shot.expect
            if expect.outcome is Outcome.STORED:
                expect = Expectation(Outcome.DUPLICATE, report_id=answer.report_id)
            again = await sender.post(shot.request)
            self._judge(shot, expect, again, label=Fault.DUPLICATE, fresh=False)

    def _judge(
        self,
        shot: Shot,
        expect: Expectation,
        answer: Answer,
        *,
        label: Fault | None,
        fresh: bool = True,
    ) -> None:
        self.tally.record(
            kind=shot.kind,
            label=label.value if label is not None else None,
            expected=str(expect),
            answer=answer,
            matched=expect.met_by(answer),
            dev_eui=shot.device.dev_eui,
            fresh=fresh,
        )
        if answer.ok:
            time = getattr(shot.report, "time", None)
            self.receipts.append(Receipt(answer.report_id, shot.kind, shot.device.dev_eui, time))

    def summary(self) -> dict[str, Any]:
        """The tally's summary, the network server's counts, and ``ok``: every answer was
        the expected one (and the network server saw nothing wrong)."""
        summary = self.tally.summary()
        summary["devices"] = len(self.fleet)
        summary["format"] = self.config.fmt.value
        skew = self.config.faults.clock_skew
        summary["clock_skew"] = {
            "seconds": skew,
            "expected": str(self.planner.expectation_for_offset(skew)),
        }
        ns = self.network_server
        if ns is not None:
            summary["network_server"] = ns.stats.summary()
        summary["ok"] = summary["unexpected"] == 0 and (ns is None or ns.stats.ok)
        return summary
