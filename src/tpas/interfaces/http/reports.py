"""``POST /thingpark/{application}``: where ThingPark pushes reports.

Raw ASGI rather than a framework route: this is the hot path, and every microsecond here
is capacity (QUALITY.md, performance reference). The body is read up to the configured
limit and no further (413 beyond it, SEC-11).

Admission is bounded (REL-6): at most ``server.max_pending_reports`` report requests are in
ingest (verification, the commit) at once; one more is answered 503 ``overloaded`` with
``Retry-After`` at once, so that excess load gets a fast answer and neither memory nor the
latency of the admitted requests grows with it. A request takes its place once its body is
read: a client slow to send its body holds no place (the read deadline bounds it).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

import msgspec

from tpas.interfaces.http.responses import send_body, send_json
from tpas.interfaces.http.types import Receive, Scope, Send
from tpas.services.ingest import IngestService
from tpas.services.metrics import Metrics

__all__ = ["PREFIX", "ReportEndpoint"]

PREFIX: Final = "/thingpark/"

# Encoded once: a refusal under overload must cost as little as possible.
_OVERLOADED: Final = msgspec.json.encode(
    {"error": "overloaded", "detail": "too many report requests in progress; try again later"}
)
_RETRY_AFTER: Final = ((b"retry-after", b"1"),)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class ReportEndpoint:
    """Reads one report request and answers with the ingest service's verdict."""

    def __init__(
        self, ingest: IngestService, metrics: Metrics, max_body_bytes: int, max_pending: int
    ) -> None:
        self.ingest = ingest
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending
        self.pending = 0
        """Report requests admitted to ingest and not through it yet."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            await self._answer(scope, receive, send)
        finally:
            # Every answer counts, refusals before ingest (413, 405, 503) included.
            self.metrics.request_latency.observe(time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"][len(PREFIX) :]
        if not name or "/" in name:
            await send_json(send, 404, {"error": "unknown_application", "detail": "bad path"})
            return
        if scope["method"] != "POST":
            await send_json(send, 405, {"error": "method_not_allowed", "detail": "use POST"})
            return
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            self.metrics.refused.inc("body_too_large")
            await send_json(send, 413, _too_large(self.max_body_bytes))
            return
        body = await self._read(receive)
        if body is None:
            self.metrics.refused.inc("body_too_large")
            await send_json(send, 413, _too_large(self.max_body_bytes))
            return
        if self.pending >= self.max_pending:
            # Shed load only as a last resort: ThingPark does not retry (SPEC.md §2.3).
            self.metrics.refused.inc("overloaded")
            await send_body(send, 503, _OVERLOADED, b"application/json", _RETRY_AFTER)
            return
        content_type = (_header(scope, b"content-type") or b"").decode("latin-1")
        raw_query = _text(scope.get("query_string", b""))
        self.pending += 1
        try:
            result = await self.ingest.ingest(
                name, raw_query, body, content_type, datetime.now(UTC)
            )
        finally:
            self.pending -= 1
        if result.reason is None:
            answer: dict[str, object] = {
                "status": result.detail,
                "id": result.report_id,
                "type": result.kind,
            }
            if result.spooled:
                answer["spooled"] = True
        else:
            answer = {"error": result.reason, "detail": result.detail}
        await send_json(send, result.status, answer)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _too_large(limit: int) -> dict[str, str]:
    return {"error": "body_too_large", "detail": f"the limit is {limit} bytes"}


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")
