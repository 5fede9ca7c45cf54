"""An in-memory :class:`~tpas.storage.ports.Store` (reports and downlinks) for tests and demos.

Same semantics as the database stores (it passes the same contract suite), nothing
durable. Setting :attr:`MemoryStore.available` to ``False`` makes every call raise
:class:`~tpas.errors.StorageUnavailable`, to test what callers do when storage is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from tpas.errors import StorageUnavailable
from tpas.storage import transitions
from tpas.storage.ports import (
    Attempt,
    DeviceSummary,
    Downlink,
    DownlinkQuery,
    DownlinkStatus,
    NewDownlink,
    NewReport,
    ReportQuery,
    StoredReport,
    StoreOutcome,
)

__all__ = ["MemoryStore"]

_STORED_FIELDS = tuple(f.name for f in fields(StoredReport) if f.name != "id")


@dataclass(slots=True)
class _Row:
    report: StoredReport
    body: bytes


class MemoryStore:
    """A :class:`~tpas.storage.ports.Store` kept in dictionaries.

    Data survives :meth:`close` and :meth:`open` on the same instance, like a file would.
    """

    def __init__(self) -> None:
        self.available = True
        """Set to ``False`` to make every call raise :class:`StorageUnavailable`."""
        self._open = False
        self._rows: dict[int, _Row] = {}
        self._by_token: dict[tuple[str, str], int] = {}
        self._by_frame: dict[tuple[str, str], int] = {}
        self._last_id = 0
        self._downlinks: dict[int, Downlink] = {}
        self._leases: dict[int, float] = {}
        """``lease_until`` of the leased downlinks."""
        self._by_key: dict[tuple[str, str], int] = {}
        self._by_correlation_id: dict[str, int] = {}
        self._last_downlink_id = 0

    async def open(self) -> None:
        """Make the store usable (there is nothing to connect to)."""
        self._check(opening=True)
        self._open = True

    async def close(self) -> None:
        """Refuse further calls until :meth:`open`; the data is kept."""
        self._open = False

    async def add_many(self, reports: Sequence[NewReport]) -> list[StoreOutcome]:
        """Store a batch; duplicates (same token or frame key in an application) are not."""
        self._check()
        outcomes: list[StoreOutcome] = []
        for new in reports:
            token = (new.application, new.token)
            frame = (new.application, new.frame_key)
            existing = self._by_token.get(token, self._by_frame.get(frame))
            if existing is not None:
                outcomes.append(StoreOutcome(existing, duplicate=True))
                continue
            self._last_id += 1
            stored = StoredReport(
                self._last_id, **{name: getattr(new, name) for name in _STORED_FIELDS}
            )
            if stored.dev_eui is not None:
                stored = replace(stored, dev_eui=stored.dev_eui.upper())
            self._rows[stored.id] = _Row(stored, new.body)
            self._by_token[token] = self._by_frame[frame] = stored.id
            outcomes.append(StoreOutcome(stored.id, duplicate=False))
        return outcomes

    async def get(self, report_id: int) -> StoredReport | None:
        """One report by id, or ``None``."""
        self._check()
        row = self._rows.get(report_id)
        return None if row is None else row.report

    async def get_body(self, report_id: int) -> tuple[bytes, str] | None:
        """The original body bytes and content type of one report, or ``None``."""
        self._check()
        row = self._rows.get(report_id)
        return None if row is None else (row.body, row.report.content_type)

    async def query(self, query: ReportQuery) -> list[StoredReport]:
        """Reports matching ``query``, newest first, at most ``query.limit``."""
        self._check()
        dev_eui = None if query.dev_eui is None else query.dev_eui.upper()
        found: list[StoredReport] = []
        for report_id in sorted(self._rows, reverse=True):
            if len(found) >= query.limit:
                break
            report = self._rows[report_id].report
            if (
                (query.application is None or report.application == query.application)
                and (dev_eui is None or report.dev_eui == dev_eui)
                and (query.kind is None or report.kind == query.kind)
                and (query.since is None or report.time_ts >= query.since)
                and (query.until is None or report.time_ts < query.until)
                and (query.before_id is None or report.id < query.before_id)
            ):
                found.append(report)
        return found

    async def devices(self, application: str | None = None) -> list[DeviceSummary]:
        """Every device with at least one report, optionally for one application."""
        self._check()
        summaries: dict[tuple[str, str], DeviceSummary] = {}
        for report_id in sorted(self._rows):
            report = self._rows[report_id].report
            if report.dev_eui is None or application not in (None, report.application):
                continue
            key = (report.application, report.dev_eui)
            summary = summaries.get(key) or DeviceSummary(key[0], key[1], report.received_at)
            counts = {**summary.counts, report.kind: summary.counts.get(report.kind, 0) + 1}
            summary = replace(
                summary, last_seen=max(summary.last_seen, report.received_at), counts=counts
            )
            if report.rssi is not None:  # ascending ids: the last one seen is the latest
                summary = replace(summary, last_rssi=report.rssi, last_snr=report.snr)
            summaries[key] = summary
        return [summaries[key] for key in sorted(summaries)]

    async def create_downlink(self, new: NewDownlink) -> tuple[Downlink, bool]:
        """Insert as ``queued``; with a known idempotency key, return that downlink."""
        self._check()
        if new.idempotency_key is not None:
            existing = self._by_key.get((new.application, new.idempotency_key))
            if existing is not None:
                return self._downlinks[existing], False
        stored = transitions.first_queued(new, self._last_downlink_id + 1)
        if stored.correlation_id in self._by_correlation_id:
            raise transitions.correlation_id_taken(stored.correlation_id)
        self._last_downlink_id = stored.id
        self._downlinks[stored.id] = stored
        self._by_correlation_id[stored.correlation_id] = stored.id
        if new.idempotency_key is not None:
            self._by_key[new.application, new.idempotency_key] = stored.id
        return stored, True

    async def get_downlink(self, downlink_id: int) -> Downlink | None:
        """One downlink by id."""
        self._check()
        return self._downlinks.get(downlink_id)

    async def list_downlinks(self, query: DownlinkQuery) -> list[Downlink]:
        """Downlinks matching ``query``, newest first, at most ``query.limit``."""
        self._check()
        dev_eui = None if query.dev_eui is None else query.dev_eui.upper()
        found: list[Downlink] = []
        for downlink_id in sorted(self._downlinks, reverse=True):
            if len(found) >= query.limit:
                break
            downlink = self._downlinks[downlink_id]
            if (
                query.application in (None, downlink.application)
                and dev_eui in (None, downlink.dev_eui)
                and query.status in (None, downlink.status)
                and (query.before_id is None or downlink_id < query.before_id)
            ):
                found.append(downlink)
        return found

    async def cancel_downlink(self, downlink_id: int, now: float) -> tuple[Downlink, bool] | None:
        """Cancel a ``queued`` downlink that no dispatcher holds right now."""
        self._check()
        downlink = self._downlinks.get(downlink_id)
        if downlink is None:
            return None
        cancelled, done = transitions.after_cancel(downlink, self._leases.get(downlink_id), now)
        if done:
            self._save(cancelled)
        return cancelled, done

    async def claim_due(
        self, now: float, limit: int, lease_seconds: float, worker: str
    ) -> list[Downlink]:
        """Lease up to ``limit`` due downlinks, at most the oldest queued one per device."""
        self._check()
        oldest: dict[tuple[str, str], int] = {}
        for downlink_id in sorted(self._downlinks):
            downlink = self._downlinks[downlink_id]
            if downlink.status == DownlinkStatus.QUEUED:
                oldest.setdefault((downlink.application, downlink.dev_eui), downlink_id)
        due = [
            self._downlinks[downlink_id]
            for downlink_id in oldest.values()
            if (self._downlinks[downlink_id].next_attempt_at or 0.0) <= now
            and not transitions.is_leased(self._leases.get(downlink_id), now)
        ]
        due.sort(key=lambda d: (d.next_attempt_at or 0.0, d.id))
        claimed = due[: max(limit, 0)]
        for downlink in claimed:
            self._leases[downlink.id] = now + lease_seconds
        return claimed

    async def record_attempt(
        self,
        downlink_id: int,
        attempt: Attempt,
        *,
        status: str,
        now: float,
        next_attempt_at: float | None = None,
        detail: str | None = None,
    ) -> Downlink:
        """Append ``attempt``, move to ``status`` (never backwards), release the lease."""
        self._check()
        downlink = transitions.after_attempt(
            self._existing(downlink_id),
            attempt,
            status=status,
            now=now,
            next_attempt_at=next_attempt_at,
            detail=detail,
        )
        return self._save(downlink)

    async def finish_downlink(
        self, downlink_id: int, status: str, now: float, detail: str | None = None
    ) -> Downlink:
        """Move a non-terminal downlink to the terminal ``status``; a terminal one stays."""
        self._check()
        downlink = self._existing(downlink_id)
        finished = transitions.after_finish(downlink, status, now, detail)
        return downlink if finished is downlink else self._save(finished)

    async def match_delivery(
        self,
        application: str,
        *,
        correlation_id: str | None,
        dev_eui: str,
        fport: int | None,
        fcnt_dn: int | None,
        status: str,
        delivery: dict[str, Any],
        now: float,
    ) -> Downlink | None:
        """Apply a delivery report to the downlink it answers, and return it."""
        self._check()
        transitions.terminal_status(status)
        downlink = self._correlated(application, correlation_id) or self._oldest_submitted(
            application, dev_eui.upper(), fport, fcnt_dn
        )
        if downlink is None:
            return None
        delivered = transitions.after_delivery(downlink, status, delivery, now)
        return downlink if delivered is downlink else self._save(delivered)

    async def count_downlinks(self) -> dict[str, int]:
        """Number of downlinks per status (statuses without any are left out)."""
        self._check()
        counts: dict[str, int] = {}
        for downlink in self._downlinks.values():
            counts[downlink.status] = counts.get(downlink.status, 0) + 1
        return counts

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` when closed or marked unavailable."""
        self._check()

    def _existing(self, downlink_id: int) -> Downlink:
        downlink = self._downlinks.get(downlink_id)
        if downlink is None:
            raise LookupError(f"no downlink with id {downlink_id}")
        return downlink

    def _save(self, downlink: Downlink) -> Downlink:
        """Store a changed downlink; every change releases the lease."""
        self._downlinks[downlink.id] = downlink
        self._leases.pop(downlink.id, None)
        return downlink

    def _correlated(self, application: str, correlation_id: str | None) -> Downlink | None:
        if correlation_id is None:
            return None
        downlink_id = self._by_correlation_id.get(correlation_id.upper())
        downlink = None if downlink_id is None else self._downlinks[downlink_id]
        return downlink if downlink is not None and downlink.application == application else None

    def _oldest_submitted(
        self, application: str, dev_eui: str, fport: int | None, fcnt_dn: int | None
    ) -> Downlink | None:
        for downlink_id in sorted(self._downlinks):
            downlink = self._downlinks[downlink_id]
            if (
                downlink.application == application
                and downlink.dev_eui == dev_eui
                and downlink.status == DownlinkStatus.SUBMITTED
                and downlink.fport == fport
                and downlink.fcnt_dn in (None, fcnt_dn)
            ):
                return downlink
        return None

    def _check(self, *, opening: bool = False) -> None:
        if not self.available:
            raise StorageUnavailable("the in-memory store is marked unavailable")
        if not (opening or self._open):
            raise StorageUnavailable("the in-memory store is not open")
