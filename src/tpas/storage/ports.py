"""The storage port: what the services need from a report store, as small Protocols.

Every implementation (in-memory, SQLite, PostgreSQL) passes the same contract suite
(``tests/storage``). Times are UTC epoch seconds (floats); DevEUIs are upper case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "DeviceSummary",
    "NewReport",
    "ReportQuery",
    "ReportStore",
    "Spool",
    "StoreOutcome",
    "StoredReport",
]


@dataclass(frozen=True, slots=True)
class NewReport:
    """A verified report, ready to be stored.

    ``token`` (the query Token) and ``frame_key`` (the frame's identity: the same frame
    delivered again has the same key) are each unique per application: a report whose
    token or frame key is already stored is a duplicate (QUALITY.md SEC-5).
    """

    application: str
    kind: str
    dev_eui: str | None
    time: str | None
    """The body Time as received (may be malformed)."""
    time_ts: float
    """The body Time as epoch seconds, or ``received_at`` when it cannot be parsed."""
    received_at: float
    token: str
    frame_key: str
    report_json: bytes
    """The typed model as typed JSON (ThingPark's keys)."""
    body: bytes
    """The original body bytes."""
    content_type: str
    fport: int | None = None
    fcnt_up: int | None = None
    fcnt_dn: int | None = None
    payload_hex: str | None = None
    rssi: float | None = None
    snr: float | None = None
    spreading_factor: int | None = None
    lat: float | None = None
    lon: float | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What became of one report in :meth:`ReportStore.add_many`."""

    id: int
    """The stored row's id (the existing row's id for a duplicate)."""
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A stored report as read back."""

    id: int
    application: str
    kind: str
    dev_eui: str | None
    time: str | None
    time_ts: float
    received_at: float
    token: str
    frame_key: str
    report_json: bytes
    content_type: str
    fport: int | None = None
    fcnt_up: int | None = None
    fcnt_dn: int | None = None
    payload_hex: str | None = None
    rssi: float | None = None
    snr: float | None = None
    spreading_factor: int | None = None
    lat: float | None = None
    lon: float | None = None
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """Filters for :meth:`ReportStore.query`; results come newest first (highest id)."""

    application: str | None = None
    dev_eui: str | None = None
    """Matched case-insensitively."""
    kind: str | None = None
    since: float | None = None
    """Inclusive lower bound on ``time_ts``."""
    until: float | None = None
    """Exclusive upper bound on ``time_ts``."""
    before_id: int | None = None
    """Cursor: only ids strictly below this one."""
    limit: int = 100


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """One device as seen through its reports."""

    application: str
    dev_eui: str
    last_seen: float
    """Latest ``received_at``."""
    counts: dict[str, int] = field(default_factory=dict)
    """Report count by kind."""
    last_rssi: float | None = None
    last_snr: float | None = None


class ReportStore(Protocol):
    """A durable report store. ``add_many`` returns only once its reports are committed."""

    async def open(self) -> None:
        """Connect and apply pending schema migrations."""

    async def close(self) -> None:
        """Release connections; pending work has been committed or refused."""

    async def add_many(self, reports: Sequence[NewReport]) -> list[StoreOutcome]:
        """Store a batch in one transaction; one outcome per report, in order.

        Raises :class:`tpas.errors.StorageUnavailable` when nothing could be committed.
        """

    async def get(self, report_id: int) -> StoredReport | None:
        """One report by id, or ``None``."""

    async def get_body(self, report_id: int) -> tuple[bytes, str] | None:
        """The original body bytes and content type of one report, or ``None``."""

    async def query(self, query: ReportQuery) -> list[StoredReport]:
        """Reports matching ``query``, newest first, at most ``query.limit``."""

    async def devices(self, application: str | None = None) -> list[DeviceSummary]:
        """Every device with at least one report, optionally for one application."""

    async def ping(self) -> None:
        """Raise :class:`tpas.errors.StorageUnavailable` when the store is unreachable."""


class Spool(Protocol):
    """A local, fsync'd holding area for reports the database could not take (REL-4).

    ``append`` returns only once the reports are on disk; replay is idempotent because
    the store refuses a token or frame key it already holds.
    """

    def append(self, reports: Sequence[NewReport]) -> None:
        """Write and fsync; raise :class:`tpas.errors.StorageUnavailable` if impossible."""

    def segments(self) -> list[str]:
        """Names of the segments waiting for replay, oldest first."""

    def read(self, segment: str) -> list[NewReport]:
        """The reports of one segment."""

    def remove(self, segment: str) -> None:
        """Forget a segment once its reports are committed to the store."""
