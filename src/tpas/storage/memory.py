"""An in-memory :class:`~tpas.storage.ports.ReportStore` for tests and demos.

Same semantics as the database stores (it passes the same contract suite), nothing
durable. Setting :attr:`MemoryStore.available` to ``False`` makes every call raise
:class:`~tpas.errors.StorageUnavailable`, to test what callers do when storage is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from tpas.errors import StorageUnavailable
from tpas.storage.ports import (
    DeviceSummary,
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
    """A :class:`~tpas.storage.ports.ReportStore` kept in dictionaries.

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

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` when closed or marked unavailable."""
        self._check()

    def _check(self, *, opening: bool = False) -> None:
        if not self.available:
            raise StorageUnavailable("the in-memory store is marked unavailable")
        if not (opening or self._open):
            raise StorageUnavailable("the in-memory store is not open")
