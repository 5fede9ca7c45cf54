"""The dispatcher: submits queued downlinks to the network server, retries, gives up.

Each round leases the downlinks that are due (per device, only the oldest unsubmitted
one: order is kept), signs each with its application's first key and a fresh Time, and
posts it. The answer decides the next state (:mod:`tpas.protocol.answers`): accepted ->
``submitted``; permanent -> ``failed``; transient -> ``queued`` again after a backoff, or
``failed`` / ``expired`` when attempts or validity run out. Leases make a crash safe: a
downlink whose dispatcher died becomes due again when its lease ends, so delivery is
at least once (a crash between the network's answer and our commit can resend).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from tpas.errors import NetworkError, StorageUnavailable
from tpas.protocol import AsKey, DownlinkParams, sign_downlink
from tpas.protocol.answers import NsAnswer, Outcome, classify_answer
from tpas.services.metrics import Metrics
from tpas.services.retry import Backoff
from tpas.storage.ports import Attempt, Downlink, DownlinkStatus, DownlinkStore

__all__ = ["Dispatcher", "DownlinkTarget", "Transport"]

log = logging.getLogger("tpas.dispatcher")


class Response(Protocol):
    """What a transport returns."""

    @property
    def status(self) -> int:
        """HTTP status."""

    @property
    def body(self) -> str:
        """Body text."""


class Transport(Protocol):
    """Posts a signed query to a downlink URL (see :mod:`tpas.clients.thingpark`)."""

    async def submit(self, url: str, query: str, timeout: float) -> Response:
        """Raise :class:`~tpas.errors.NetworkError` when no answer comes."""


@dataclass(frozen=True, slots=True)
class DownlinkTarget:
    """Where and how one application's downlinks are sent."""

    url: str | None
    as_id: str
    key: AsKey


class Dispatcher:
    """Submits due downlinks; one per process, several processes may share a database."""

    def __init__(
        self,
        store: DownlinkStore,
        targets: Mapping[str, DownlinkTarget],
        transport: Transport,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        jitter: Callable[[], float],
        worker: str,
        backoff: Backoff | None = None,
        max_attempts: int = 8,
        http_timeout: float = 10.0,
        poll_interval: float = 0.5,
        batch: int = 32,
    ) -> None:
        self.store = store
        self.targets = targets
        self.transport = transport
        self.metrics = metrics
        self.clock = clock
        self.jitter = jitter
        self.worker = worker
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.http_timeout = http_timeout
        self.poll_interval = poll_interval
        self.batch = batch
        self.lease_seconds = 2 * http_timeout + 5
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        """Run rounds in the background until :meth:`stop`."""
        self._task = asyncio.create_task(self._loop(), name="tpas-dispatcher")

    def wake(self) -> None:
        """Start the next round now (a downlink was just queued)."""
        self._wake.set()

    async def stop(self, grace: float = 15.0) -> None:
        """Stop after the current round, whose answers are recorded first; a round still
        running after ``grace`` seconds is cancelled (its leases expire: at least once)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        rounds = 0
        while not self._stopping:
            try:
                done = await self.run_once()
                if rounds % 10 == 0:
                    depth = await self.store.count_downlinks()
                    self.metrics.outbox_depth.set_all({k: float(v) for k, v in depth.items()})
                rounds += 1
            except StorageUnavailable as exc:
                log.warning("dispatcher waits for storage: %s", exc)
                done = 0
            if done == 0 and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def run_once(self) -> int:
        """One round: lease what is due and submit it; return how many were handled.

        The submissions of a round run concurrently (at most one per device).
        """
        due = await self.store.claim_due(self.clock(), self.batch, self.lease_seconds, self.worker)
        await asyncio.gather(*(self._submit(d) for d in due))
        return len(due)

    async def _submit(self, downlink: Downlink) -> None:
        now = self.clock()
        if downlink.expires_at is not None and now >= downlink.expires_at:
            await self.store.finish_downlink(
                downlink.id, DownlinkStatus.EXPIRED, now, "validity ended before submission"
            )
            return
        target = self.targets.get(downlink.application)
        if target is None or target.url is None:
            await self.store.finish_downlink(
                downlink.id, DownlinkStatus.FAILED, now, "no downlink_url configured"
            )
            return
        params = DownlinkParams(
            dev_eui=downlink.dev_eui,
            fport=downlink.fport,
            payload_hex=downlink.payload_hex,
            confirmed=downlink.confirmed,
            flush_queue=downlink.flush_queue,
            validity_time=_validity(downlink.validity_time),
            fcnt_dn=downlink.fcnt_dn,
            correlation_id=downlink.correlation_id,
        )
        signed = sign_downlink(
            params, as_id=target.as_id, key=target.key, time=datetime.fromtimestamp(now, UTC)
        )
        status: int | None = None
        try:
            response = await self.transport.submit(target.url, signed.query, self.http_timeout)
            status = response.status
            answer = classify_answer(response.status, response.body)
        except NetworkError as exc:
            answer = NsAnswer(Outcome.TRANSIENT, str(exc))
        self.metrics.downlink_attempts.inc(answer.outcome.value)
        number = len(downlink.attempts) + 1
        attempt = Attempt(number, now, answer.outcome.value, status, answer.message)
        if answer.outcome is Outcome.ACCEPTED:
            await self.store.record_attempt(
                downlink.id, attempt, status=DownlinkStatus.SUBMITTED, now=self.clock()
            )
            return
        if answer.outcome is Outcome.PERMANENT:
            await self._end(downlink, attempt, DownlinkStatus.FAILED, answer.message)
            return
        retry_at = now + self.backoff.delay(number, self.jitter())
        if number >= self.max_attempts:
            detail = f"gave up after {number} attempts: {answer.message}"
            await self._end(downlink, attempt, DownlinkStatus.FAILED, detail)
        elif downlink.expires_at is not None and retry_at >= downlink.expires_at:
            detail = f"validity ends before the next attempt: {answer.message}"
            await self._end(downlink, attempt, DownlinkStatus.EXPIRED, detail)
        else:
            await self.store.record_attempt(
                downlink.id,
                attempt,
                status=DownlinkStatus.QUEUED,
                now=self.clock(),
                next_attempt_at=retry_at,
            )

    async def _end(self, downlink: Downlink, attempt: Attempt, status: str, detail: str) -> None:
        log.info("downlink %d %s: %s", downlink.id, status, detail)
        await self.store.record_attempt(
            downlink.id, attempt, status=status, now=self.clock(), detail=detail
        )


def _validity(text: str | None) -> str | int | None:
    if text is None:
        return None
    return int(text) if text.isdigit() else text
