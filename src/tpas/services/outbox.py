"""The downlink outbox, as the API and the ingest path see it.

Requests are validated against SPEC.md §4.2 and committed before anything is sent; the
dispatcher (:mod:`tpas.services.dispatcher`) submits them. Delivery reports coming back
through the report endpoint are matched to their downlink here.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tpas.errors import InputError
from tpas.protocol import Document, DownlinkParams, DownlinkRejected, DownlinkSent, parse_time
from tpas.protocol.delivery import describe_delivery
from tpas.services.metrics import Metrics
from tpas.storage.ports import (
    Downlink,
    DownlinkQuery,
    DownlinkStatus,
    DownlinkStore,
    NewDownlink,
)

__all__ = ["Outbox", "UnknownApplicationError"]


class UnknownApplicationError(InputError):
    """The request names an application that is not configured."""

    reason = "unknown_application"


class Outbox:
    """Enqueue, cancel, read downlinks; apply delivery reports."""

    def __init__(
        self,
        store: DownlinkStore,
        applications: Mapping[str, Any],
        metrics: Metrics,
        *,
        default_lifetime: float = 3600.0,
    ) -> None:
        self.store = store
        self.applications = applications
        self.metrics = metrics
        self.default_lifetime = default_lifetime

    async def enqueue(
        self,
        application: str,
        params: DownlinkParams,
        *,
        now: float,
        idempotency_key: str | None = None,
    ) -> tuple[Downlink, bool]:
        """Validate and commit a downlink; with a known idempotency key, return that one.

        Raises :class:`~tpas.errors.DownlinkParameterError` or
        :class:`UnknownApplicationError` before anything is stored.
        """
        if application not in self.applications:
            raise UnknownApplicationError(f"no application is called {application!r}")
        p = params.validated()
        if isinstance(p.validity_time, str):
            moment = parse_time(p.validity_time)
            expires_at = moment.timestamp() if moment else now + self.default_lifetime
        elif p.validity_time is not None:
            expires_at = now + p.validity_time
        else:
            expires_at = now + self.default_lifetime
        new = NewDownlink(
            application=application,
            dev_eui=p.dev_eui,
            correlation_id=p.correlation_id or secrets.token_hex(8).upper(),
            created_at=now,
            fport=p.fport,
            payload_hex=p.payload_hex,
            confirmed=p.confirmed,
            flush_queue=p.flush_queue,
            validity_time=None if p.validity_time is None else str(p.validity_time),
            expires_at=expires_at,
            fcnt_dn=p.fcnt_dn,
            idempotency_key=idempotency_key,
        )
        downlink, created = await self.store.create_downlink(new)
        if created:
            self.metrics.downlinks_queued.inc(application)
        return downlink, created

    async def cancel(self, downlink_id: int, now: float) -> tuple[Downlink, bool] | None:
        """Cancel a downlink that has not been submitted."""
        return await self.store.cancel_downlink(downlink_id, now)

    async def get(self, downlink_id: int) -> Downlink | None:
        """One downlink with its attempts."""
        return await self.store.get_downlink(downlink_id)

    async def list(self, query: DownlinkQuery) -> list[Downlink]:
        """Downlinks, newest first."""
        return await self.store.list_downlinks(query)

    async def apply_delivery(
        self, application: str, report: Document, report_id: int | None, now: float
    ) -> Downlink | None:
        """Move the downlink a delivery report answers to ``sent``, ``failed`` or
        ``rejected``; ``None`` when the report matches no downlink of ours."""
        if isinstance(report, DownlinkSent):
            status = DownlinkStatus.SENT if report.delivery_status == 1 else DownlinkStatus.FAILED
        elif isinstance(report, DownlinkRejected):
            status = DownlinkStatus.REJECTED
        else:
            return None
        delivery = {**describe_delivery(report), "report_id": report_id}
        downlink = await self.store.match_delivery(
            application,
            correlation_id=report.correlation_id.upper() if report.correlation_id else None,
            dev_eui=report.dev_eui.upper(),
            fport=report.fport,
            fcnt_dn=report.fcnt_dn if isinstance(report, DownlinkSent) else None,
            status=status,
            delivery=delivery,
            now=now,
        )
        if downlink is not None and downlink.status == DownlinkStatus.SENT:
            self.metrics.downlink_sent_seconds.observe(now - downlink.created_at)
        return downlink


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC with milliseconds."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
