"""Report ingest: from an HTTP request's parts to a durably stored report.

The order matters (QUALITY.md SEC-1): the application is looked up, the body parsed to a
raw document, the token and query verified over the raw values, and only then is the
report converted, stored and acknowledged. Every refusal carries a stable reason code and
an HTTP status; nothing here raises for bad input.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from tpas.errors import DocumentError, StorageUnavailable
from tpas.protocol import (
    Document,
    Reason,
    check_report,
    format_for_content_type,
    parse_time,
    sniff_format,
)
from tpas.protocol.keys import AsKey
from tpas.protocol.token import Recipe
from tpas.services.metrics import Metrics
from tpas.services.outbox import Outbox
from tpas.services.writer import ReportWriter
from tpas.storage.ports import NewReport

__all__ = ["Application", "IngestResult", "IngestService", "frame_key", "new_report"]

log = logging.getLogger("tpas.ingest")

# 401: the request does not prove it comes from ThingPark; 403: it does, for another AS.
_STATUS: Final[Mapping[Reason, int]] = {
    Reason.MISSING_PARAMETER: 401,
    Reason.REPEATED_PARAMETER: 400,
    Reason.BAD_AS_ID: 403,
    Reason.MALFORMED_TIME: 401,
    Reason.STALE_TIME: 401,
    Reason.FUTURE_TIME: 401,
    Reason.BODY_QUERY_MISMATCH: 401,
    Reason.TOKEN_MISMATCH: 401,
}

_DELIVERY_KINDS: Final = frozenset({"downlink_sent", "downlink_rejected"})
_CLOCK_REFUSALS: Final = (Reason.STALE_TIME, Reason.FUTURE_TIME)

# Media types that say nothing about the body: the format is sniffed.
_SNIFFED: Final = frozenset({"", "text/plain", "application/octet-stream"})

# Fields that identify a frame (or event) independently of which gateway or destination
# it came through: the same frame delivered twice (BLAST routing, a retried push) has the
# same values; radio metadata and the query string may differ.
_FRAME_FIELDS: Final = (
    "time",
    "fcnt_up",
    "fcnt_dn",
    "fport",
    "payload_hex",
    "raw_join_request",
    "type",
    "var1",
    "var2",
    "delivery_status",
    "correlation_id",
    "transmission_status",
    "id",
    "state",
    "last_update_time",
    "dev_loc_time",
    "dev_lat",
    "dev_lon",
)


@dataclass(frozen=True, slots=True)
class Application:
    """What ingest needs to know of one configured application."""

    name: str
    as_id: str
    as_keys: tuple[AsKey, ...]
    max_time_drift: float | None
    recipes: Mapping[str, Recipe]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The answer to give: an HTTP status, a reason code for refusals, and details."""

    status: int
    reason: str | None = None
    detail: str = ""
    report_id: int | None = None
    duplicate: bool = False
    spooled: bool = False
    kind: str | None = None


def frame_key(model: Document) -> str:
    """A digest of the fields that identify the frame or event a report describes."""
    identity = getattr(model, "dev_eui", None) or getattr(model, "lrr_id", "")
    parts = [model.ROOT, str(identity).upper()]
    parts += [repr(getattr(model, name, None)) for name in _FRAME_FIELDS]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _get(model: Document, name: str) -> Any:
    return getattr(model, name, None)


def new_report(
    app: str, model: Document, token: str, body: bytes, content_type: str, received_at: float
) -> NewReport:
    """The storable form of a verified report."""
    time_text = _get(model, "time") or _get(model, "creation_time")
    parsed = parse_time(time_text)
    dev_eui = _get(model, "dev_eui")
    return NewReport(
        application=app,
        kind=model.kind,
        dev_eui=dev_eui.upper() if dev_eui else None,
        time=time_text,
        time_ts=parsed.timestamp() if parsed else received_at,
        received_at=received_at,
        token=token.lower(),
        frame_key=frame_key(model),
        body=body,
        content_type=content_type,
        fport=_get(model, "fport"),
        fcnt_up=_get(model, "fcnt_up"),
        fcnt_dn=_get(model, "fcnt_dn"),
        payload_hex=_get(model, "payload_hex"),
        rssi=_get(model, "rssi"),
        snr=_get(model, "snr"),
        spreading_factor=_get(model, "spreading_factor"),
        lat=_get(model, "dev_lat"),
        lon=_get(model, "dev_lon"),
        correlation_id=_get(model, "correlation_id"),
    )


class IngestService:
    """Verifies, converts and stores reports for the configured applications."""

    def __init__(
        self,
        applications: Mapping[str, Application],
        writer: ReportWriter,
        metrics: Metrics,
        outbox: Outbox | None = None,
    ) -> None:
        self.applications = applications
        self.writer = writer
        self.metrics = metrics
        self.outbox = outbox

    def _refuse(self, status: int, reason: str, detail: str) -> IngestResult:
        self.metrics.refused.inc(reason)
        return IngestResult(status, reason, detail)

    async def ingest(
        self,
        application: str,
        raw_query: str,
        body: bytes,
        content_type: str,
        now: datetime,
    ) -> IngestResult:
        """Handle one report request; ``now`` is the server's current UTC time."""
        app = self.applications.get(application)
        if app is None:
            return self._refuse(404, "unknown_application", "no application has this name")
        media = content_type.partition(";")[0].strip().lower()
        fmt = format_for_content_type(media)
        if fmt is None:
            if media not in _SNIFFED:
                return self._refuse(415, "unsupported_content_type", "send JSON or XML")
            fmt = sniff_format(body)
        try:
            checked = check_report(
                body,
                fmt,
                raw_query,
                app.as_keys,
                as_id=app.as_id,
                now=now,
                max_drift=app.max_time_drift,
                recipes=app.recipes,
            )
        except DocumentError as exc:
            return self._refuse(400, exc.reason, str(exc))
        verdict = checked.verdict
        if verdict.query_time is not None and verdict.reason not in _CLOCK_REFUSALS:
            self.metrics.clock_skew.observe((now - verdict.query_time).total_seconds())
        if checked.model is None:
            if verdict.reason is None:
                return self._refuse(400, "not_a_report", verdict.detail)
            return self._refuse(_STATUS[verdict.reason], verdict.reason.value, verdict.detail)
        model = checked.model
        report = new_report(app.name, model, checked.token, body, content_type, now.timestamp())
        try:
            outcome = await self.writer.add(report)
        except StorageUnavailable:
            return self._refuse(503, "storage_unavailable", "storage and spool unavailable")
        if outcome.duplicate:
            self.metrics.duplicates.inc(app.name)
        else:
            self.metrics.accepted.inc(app.name, report.kind)
        if self.outbox is not None and report.kind in _DELIVERY_KINDS:
            # After the report is durable: a delivery report settles its downlink.
            try:
                await self.outbox.apply_delivery(app.name, model, outcome.id, now.timestamp())
            except StorageUnavailable:
                log.warning("delivery report stored; its downlink will not be updated now")
        return IngestResult(
            200,
            None,
            "duplicate" if outcome.duplicate else "stored",
            outcome.id,
            outcome.duplicate,
            outcome.spooled,
            report.kind,
        )
