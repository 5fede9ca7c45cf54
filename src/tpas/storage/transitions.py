"""How a stored downlink changes: the rules every store applies, as pure functions.

The stores differ only in how they find, lock and write a row; what the row becomes is
decided here, so the in-memory, SQLite and PostgreSQL outboxes cannot drift apart.

Statuses only move forward: ``queued`` -> ``submitted`` -> a terminal status. A late
writer can therefore never pull a downlink back: neither a dispatcher whose lease ran out
while another one took the downlink over, nor the dispatcher recording the network
server's acceptance after the delivery report has already arrived.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from tpas.errors import DownlinkParameterError
from tpas.storage.ports import (
    TERMINAL_STATUSES,
    Attempt,
    Downlink,
    DownlinkStatus,
    NewDownlink,
)

__all__ = [
    "after_attempt",
    "after_cancel",
    "after_delivery",
    "after_finish",
    "correlation_id_taken",
    "first_queued",
    "is_leased",
    "terminal_status",
]

_QUEUED: Final = DownlinkStatus.QUEUED
_SUBMITTED: Final = DownlinkStatus.SUBMITTED
_RANK: Final = {_QUEUED: 0, _SUBMITTED: 1} | dict.fromkeys(TERMINAL_STATUSES, 2)


def _status(value: str) -> DownlinkStatus:
    try:
        return DownlinkStatus(value)
    except ValueError:
        raise ValueError(f"unknown downlink status {value!r}") from None


def terminal_status(value: str) -> DownlinkStatus:
    """``value`` as a terminal status; ValueError for any other."""
    status = _status(value)
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"{value!r} is not a terminal downlink status")
    return status


def is_leased(lease_until: float | None, now: float) -> bool:
    """Whether a dispatcher holds the downlink at ``now`` (a lease ends at ``lease_until``)."""
    return lease_until is not None and lease_until >= now


def correlation_id_taken(correlation_id: str) -> DownlinkParameterError:
    """The error for a new downlink whose CorrelationID another downlink already has."""
    return DownlinkParameterError(
        "CorrelationID", f"{correlation_id.upper()} is already used by another downlink"
    )


def first_queued(new: NewDownlink, downlink_id: int) -> Downlink:
    """``new`` as it is stored: ``queued``, due at once; DevEUI and CorrelationID upper case."""
    return Downlink(
        id=downlink_id,
        application=new.application,
        dev_eui=new.dev_eui.upper(),
        correlation_id=new.correlation_id.upper(),
        created_at=new.created_at,
        status=_QUEUED.value,
        fport=new.fport,
        payload_hex=new.payload_hex,
        confirmed=new.confirmed,
        flush_queue=new.flush_queue,
        validity_time=new.validity_time,
        expires_at=new.expires_at,
        fcnt_dn=new.fcnt_dn,
        idempotency_key=new.idempotency_key,
        next_attempt_at=new.created_at,
    )


def after_attempt(
    downlink: Downlink,
    attempt: Attempt,
    *,
    status: str,
    now: float,
    next_attempt_at: float | None,
    detail: str | None,
) -> Downlink:
    """``downlink`` with ``attempt`` appended, in ``status`` unless that would move it back.

    ``queued`` again is a retry at ``next_attempt_at`` (at ``now`` when not given).
    """
    target = _status(status)
    moved = replace(downlink, attempts=(*downlink.attempts, attempt))
    current = _status(downlink.status)
    if _RANK[target] > _RANK[current] or current is target is _QUEUED:
        return _enter(moved, target, now, next_attempt_at=next_attempt_at, detail=detail)
    return moved


def after_finish(downlink: Downlink, status: str, now: float, detail: str | None) -> Downlink:
    """``downlink`` in the terminal ``status``; the very same object when already terminal."""
    target = terminal_status(status)
    if downlink.status in TERMINAL_STATUSES:
        return downlink
    return _enter(downlink, target, now, detail=detail)


def after_cancel(
    downlink: Downlink, lease_until: float | None, now: float
) -> tuple[Downlink, bool]:
    """``downlink`` cancelled and True, or unchanged and False when it is not ``queued`` or
    a dispatcher holds its lease."""
    if downlink.status != _QUEUED or is_leased(lease_until, now):
        return downlink, False
    return _enter(downlink, DownlinkStatus.CANCELLED, now, detail="cancelled"), True


def after_delivery(
    downlink: Downlink, status: str, delivery: dict[str, Any], now: float
) -> Downlink:
    """``downlink`` in the terminal ``status`` with ``delivery``; the very same object when
    already terminal (a repeated report changes nothing)."""
    target = terminal_status(status)
    if downlink.status in TERMINAL_STATUSES:
        return downlink
    return replace(_enter(downlink, target, now), delivery=delivery)


def _enter(
    downlink: Downlink,
    status: DownlinkStatus,
    now: float,
    *,
    next_attempt_at: float | None = None,
    detail: str | None = None,
) -> Downlink:
    detail = downlink.detail if detail is None else detail
    if status is _QUEUED:
        due = now if next_attempt_at is None else next_attempt_at
        return replace(downlink, status=status.value, next_attempt_at=due, detail=detail)
    if status is _SUBMITTED:
        return replace(
            downlink, status=status.value, submitted_at=now, next_attempt_at=None, detail=detail
        )
    return replace(
        downlink, status=status.value, finished_at=now, next_attempt_at=None, detail=detail
    )
