"""The storage port: what the services need from a report store, as small Protocols.

Every implementation (in-memory, SQLite, PostgreSQL) passes the same contract suite
(``tests/storage``). Times are UTC epoch seconds (floats); DevEUIs are upper case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

import msgspec

__all__ = [
    "TERMINAL_STATUSES",
    "Attempt",
    "DeviceSummary",
    "Downlink",
    "DownlinkQuery",
    "DownlinkStatus",
    "DownlinkStore",
    "NewDownlink",
    "NewReport",
    "ReportQuery",
    "ReportStore",
    "Spool",
    "Store",
    "StoreOutcome",
    "StoredReport",
]


class NewReport(msgspec.Struct, frozen=True, gc=False):
    """A verified report, ready to be stored.

    ``token`` (the query Token) and ``frame_key`` (the frame's identity: the same frame
    delivered again has the same key) are each unique per application: a report whose
    token or frame key is already stored is a duplicate (QUALITY.md SEC-5).

    A msgspec struct rather than a dataclass: one is built for every report received, and
    a struct is built in a fraction of the time. The spool writes it as a MessagePack map
    of these field names.
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
    body: bytes
    """The original body bytes; the typed report is decoded from them when read."""
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
    signed_at: float = 0.0
    """The query's Time, which the token signs, in epoch seconds; 0 when it has none. The
    same token always comes with the same Time: the stores key tokens by both, so that
    new tokens sit together in their index (see ``tpas.storage.migrations``)."""


class StoreOutcome(msgspec.Struct, frozen=True, gc=False):
    """What became of one report in :meth:`ReportStore.add_many` (one per report)."""

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
    body: bytes
    """The original body bytes, as received."""
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


class DownlinkStatus(StrEnum):
    """Where a downlink stands (issue: queued -> submitted -> sent / failed / ...)."""

    QUEUED = "queued"
    """Committed, waiting to be (re)submitted to the network server."""
    SUBMITTED = "submitted"
    """The network server accepted it; waiting for its delivery report."""
    SENT = "sent"
    """A DevEUI_downlink_Sent report with DeliveryStatus 1 came back."""
    FAILED = "failed"
    """DeliveryStatus 0, a permanent network-server error, or retries exhausted."""
    REJECTED = "rejected"
    """A DevEUI_downlink_Rejected report came back."""
    EXPIRED = "expired"
    """Its validity ended before the network server accepted it."""
    CANCELLED = "cancelled"
    """Cancelled through the API before it was submitted."""


TERMINAL_STATUSES: Final = frozenset(
    {
        DownlinkStatus.SENT,
        DownlinkStatus.FAILED,
        DownlinkStatus.REJECTED,
        DownlinkStatus.EXPIRED,
        DownlinkStatus.CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class NewDownlink:
    """A validated downlink request, ready to be committed to the outbox."""

    application: str
    dev_eui: str
    """Upper-case hex."""
    correlation_id: str
    """16 upper-case hex digits, unique across all downlinks."""
    created_at: float
    fport: int | None = None
    payload_hex: str | None = None
    """Upper-case hex."""
    confirmed: bool = False
    flush_queue: bool = False
    validity_time: str | None = None
    """As given: an ISO-8601 time or a number of seconds (text)."""
    expires_at: float | None = None
    """Epoch seconds after which it must not be submitted any more."""
    fcnt_dn: int | None = None
    idempotency_key: str | None = None
    """Unique per application when given: the same key returns the same downlink."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One submission attempt to the network server."""

    number: int
    at: float
    outcome: str
    """``accepted``, ``transient`` or ``permanent``."""
    http_status: int | None = None
    message: str = ""
    """The network server's message, or the network error."""


@dataclass(frozen=True, slots=True)
class Downlink:
    """A downlink as stored."""

    id: int
    application: str
    dev_eui: str
    correlation_id: str
    created_at: float
    status: str
    fport: int | None = None
    payload_hex: str | None = None
    confirmed: bool = False
    flush_queue: bool = False
    validity_time: str | None = None
    expires_at: float | None = None
    fcnt_dn: int | None = None
    idempotency_key: str | None = None
    next_attempt_at: float | None = None
    """When the dispatcher may (re)submit it; ``None`` once it is submitted or final."""
    submitted_at: float | None = None
    finished_at: float | None = None
    detail: str | None = None
    """Why it ended as it did (failed, rejected, expired, cancelled)."""
    attempts: tuple[Attempt, ...] = ()
    delivery: dict[str, Any] | None = None
    """What the delivery report said (set when one was matched)."""


@dataclass(frozen=True, slots=True)
class DownlinkQuery:
    """Filters for :meth:`DownlinkStore.list_downlinks`; newest first."""

    application: str | None = None
    dev_eui: str | None = None
    status: str | None = None
    before_id: int | None = None
    limit: int = 100


class DownlinkStore(Protocol):
    """The durable downlink outbox. Every method commits before it returns."""

    async def create_downlink(self, new: NewDownlink) -> tuple[Downlink, bool]:
        """Insert as ``queued`` (``next_attempt_at = created_at``); return it and True.

        With an idempotency key already used in the same application, insert nothing and
        return the existing downlink and False. A CorrelationID another downlink already
        has raises :class:`~tpas.errors.DownlinkParameterError` (field ``CorrelationID``).
        """

    async def get_downlink(self, downlink_id: int) -> Downlink | None:
        """One downlink by id."""

    async def list_downlinks(self, query: DownlinkQuery) -> list[Downlink]:
        """Downlinks matching ``query``, newest first."""

    async def cancel_downlink(self, downlink_id: int, now: float) -> tuple[Downlink, bool] | None:
        """Cancel a ``queued`` downlink that is not leased by a dispatcher right now.

        Returns the downlink and whether it was cancelled by this call (False when its
        status no longer allows it), or ``None`` when there is no such downlink.
        """

    async def claim_due(
        self, now: float, limit: int, lease_seconds: float, worker: str
    ) -> list[Downlink]:
        """Lease up to ``limit`` downlinks to submit now.

        A downlink is due when it is ``queued``, ``next_attempt_at <= now``, its lease (if
        any) has expired, and no older (lower id) downlink of the same application and
        DevEUI is still ``queued``: per device, downlinks are submitted in order. Two
        processes never hold the same lease (PostgreSQL: ``FOR UPDATE SKIP LOCKED``).
        """

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
        """Append ``attempt``, move to ``status`` and release the lease.

        ``queued`` with ``next_attempt_at`` schedules a retry (``None``: due at ``now``);
        ``submitted`` sets ``submitted_at``; a terminal status sets ``finished_at`` and
        ``detail``. Statuses never move back: a downlink already further along (its
        delivery report came first, or another worker took over an expired lease) keeps
        its status and only gains the attempt. :class:`LookupError` for an unknown id.
        """

    async def finish_downlink(
        self, downlink_id: int, status: str, now: float, detail: str | None = None
    ) -> Downlink:
        """Move a non-terminal downlink to a terminal status without an attempt
        (``expired`` before submission, for example) and release its lease.

        A terminal downlink is returned unchanged. :class:`ValueError` for a non-terminal
        ``status``, :class:`LookupError` for an unknown id.
        """

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
        """Apply a delivery report to the downlink it answers, and return it.

        Matched by CorrelationID (within the application); failing that, the oldest
        ``submitted`` downlink of the application with that DevEUI, the same FPort and,
        when the downlink set one, the same FCntDn. Only a ``submitted`` (or ``queued``:
        the network may answer before tpas recorded the submission) downlink changes: it
        takes ``status`` (terminal, else :class:`ValueError`), ``delivery`` and
        ``finished_at``; a terminal one is returned unchanged. ``None`` when nothing
        matches.
        """

    async def count_downlinks(self) -> dict[str, int]:
        """Number of downlinks per status; statuses without any may be left out."""


class Store(ReportStore, DownlinkStore, Protocol):
    """A database holding both the reports and the downlink outbox."""
