"""Report ingest: from an HTTP request's parts to a durably stored report.

The order matters (QUALITY.md SEC-1): the application is looked up, the body parsed to a
raw document, the token and query verified over the raw values, and only then is the
report converted, stored and acknowledged. Every refusal carries a stable reason code and
an HTTP status; nothing here raises for bad input.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter, itemgetter
from typing import Any, Final

import msgspec

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


class IngestResult(msgspec.Struct, frozen=True, gc=False):
    """The answer to give: an HTTP status, a reason code for refusals, and details."""

    status: int
    reason: str | None = None
    detail: str = ""
    report_id: int | None = None
    duplicate: bool = False
    spooled: bool = False
    kind: str | None = None


# What new_report reads off a model; getattr(model, name, None) for each. The tail are
# NewReport's last fields, in its order (DevLat/DevLon stored as lat/lon).
_HEAD_FIELDS: Final = ("dev_eui", "lrr_id", "time", "creation_time")
_TAIL_FIELDS: Final = (
    "fport",
    "fcnt_up",
    "fcnt_dn",
    "payload_hex",
    "rssi",
    "snr",
    "spreading_factor",
    "dev_lat",
    "dev_lon",
    "correlation_id",
)


def _reader(cls: type, names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """One call returning ``getattr(model, name, None)`` for each of ``names`` (at least
    two), for models of class ``cls``: C-level attribute reads instead of a Python loop."""
    fields = frozenset(getattr(cls, "__struct_fields__", ()))
    if any(name not in fields and hasattr(cls, name) for name in names):
        # Not a plain struct field (a property, say): read everything the general way.
        return lambda model: tuple(getattr(model, name, None) for name in names)
    present = [name for name in names if name in fields]
    if len(present) < 2:
        # attrgetter returns a bare value for one name; such a class is not worth a shortcut.
        return lambda model: tuple(getattr(model, name, None) for name in names)
    get = attrgetter(*present)
    # Absent names take the trailing None of (*values, None).
    pick = itemgetter(*[present.index(n) if n in present else len(present) for n in names])
    return lambda model: pick((*get(model), None))


class _Shape:
    """How to read one model class quickly: its row fields and its frame key."""

    __slots__ = ("frame", "has_lrr_id", "head", "root", "tail")

    def __init__(self, cls: type[Document]) -> None:
        self.head = _reader(cls, _HEAD_FIELDS)
        self.tail = _reader(cls, _TAIL_FIELDS)
        self.frame = _reader(cls, _FRAME_FIELDS)
        self.has_lrr_id = hasattr(cls, "lrr_id")
        self.root = cls.ROOT

    def key(self, model: Document, identity: Any) -> str:
        # The root, the identity, then the repr of each frame field, joined by U+001F.
        frame = "\x1f".join(map(repr, self.frame(model)))
        text = f"{self.root}\x1f{str(identity).upper()}\x1f{frame}"
        return hashlib.sha256(text.encode()).hexdigest()[:40]


_SHAPES: dict[type, _Shape] = {}


def _shape(cls: type[Document]) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _Shape(cls)
    return shape


def frame_key(model: Document) -> str:
    """A digest of the fields that identify the frame or event a report describes: SHA-256
    over the root, the DevEUI (else the LRR id) upper case and the repr of each of
    ``_FRAME_FIELDS`` (``None`` where the type has no such field), joined by U+001F, cut
    to 40 hex digits. Stored as a unique key: it must never change for the same report."""
    shape = _shape(type(model))
    identity = getattr(model, "dev_eui", None) or getattr(model, "lrr_id", "")
    return shape.key(model, identity)


def new_report(
    app: str,
    model: Document,
    token: str,
    body: bytes,
    content_type: str,
    received_at: float,
    signed_at: float = 0.0,
) -> NewReport:
    """The storable form of a verified report; ``signed_at`` is the query's Time in epoch
    seconds (0 when it has none)."""
    shape = _shape(type(model))
    dev_eui, lrr_id, time_text, creation_time = shape.head(model)
    time_text = time_text or creation_time
    parsed = parse_time(time_text)
    identity = dev_eui or (lrr_id if shape.has_lrr_id else "")
    # Positional, in NewReport's field order: one of these is built for every report.
    fields: tuple[Any, ...] = (
        app,
        model.kind,
        dev_eui.upper() if dev_eui else None,
        time_text,
        parsed.timestamp() if parsed else received_at,
        received_at,
        token.lower(),
        shape.key(model, identity),
        body,
        content_type,
        *shape.tail(model),
        signed_at,
    )
    return NewReport(*fields)


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
        signed_at = verdict.query_time.timestamp() if verdict.query_time is not None else 0.0
        report = new_report(
            app.name, model, checked.token, body, content_type, now.timestamp(), signed_at
        )
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
