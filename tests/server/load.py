"""Concurrent load on a running server: distinct signed uplinks, every answer recorded."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from tests.server.conftest import Server, signed
from tpas.testing import make_uplink

__all__ = ["Answer", "Load", "post_distinct_uplink"]


def post_distinct_uplink(
    client: httpx.Client, run: int, worker: int, counter: int
) -> tuple[str, float, httpx.Response | None]:
    """Post uplink number ``counter`` of ``worker`` in ``run``, signed now: distinct across
    runs and workers (the same frame again would be a duplicate). Returns its token, when
    it was sent (``time.monotonic()``) and the answer, or ``None`` when no HTTP answer came."""
    dev_eui = f"{run:04X}{worker:04X}{counter:08X}"
    report = signed(make_uplink(dev_eui, fcnt_up=counter), time=datetime.now(UTC))
    sent = time.monotonic()
    try:
        answer = client.post(
            f"/thingpark/farm?{report.query}",
            content=report.body,
            headers={"Content-Type": report.content_type},
        )
    except httpx.TransportError:
        return report.token, sent, None
    return report.token, sent, answer


@dataclass(frozen=True, slots=True)
class Answer:
    """One request: when it was sent (monotonic), how long it took, and the outcome."""

    sent: float
    seconds: float
    status: int  # 0: no HTTP answer (connection refused, reset or timed out)
    spooled: bool
    error: str | None  # the reason code of a refusal


class Load:
    """Client threads posting distinct signed uplinks and recording what was acknowledged."""

    def __init__(self, server: Server, threads: int = 12, run: int = 0, timeout: float = 5) -> None:
        self.server = server
        self.run = run
        self.timeout = timeout
        self.acknowledged: set[str] = set()
        self.answers: list[Answer] = []
        self.errors = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.server.url, timeout=self.timeout) as client:
            counter = 0
            while not self.stop.is_set():
                counter += 1
                token, sent, answer = post_distinct_uplink(client, self.run, worker, counter)
                if answer is None:
                    with self._lock:
                        self.errors += 1
                        self.answers.append(Answer(sent, time.monotonic() - sent, 0, False, None))
                    time.sleep(0.01)
                    continue
                seconds = time.monotonic() - sent
                body = answer.json()
                with self._lock:
                    if answer.status_code == 200:
                        self.acknowledged.add(token)
                    self.answers.append(
                        Answer(
                            sent,
                            seconds,
                            answer.status_code,
                            bool(body.get("spooled")),
                            body.get("error"),
                        )
                    )

    def wait_for(self, count: int, limit: float = 20) -> None:
        """Return once ``count`` reports were acknowledged, or after ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while len(self.acknowledged) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def sent_between(self, start: float, end: float) -> list[Answer]:
        """The answers to requests sent between two ``time.monotonic()`` readings."""
        with self._lock:
            return [a for a in self.answers if start <= a.sent < end]

    def pending_between(self, start: float, end: float) -> list[Answer]:
        """The answers to requests that were waiting at some moment between two
        ``time.monotonic()`` readings."""
        with self._lock:
            return [a for a in self.answers if a.sent < end and a.sent + a.seconds > start]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
