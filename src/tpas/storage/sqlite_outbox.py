"""The downlink outbox of :class:`~tpas.storage.sqlite.SqliteStore`.

Every change runs on the store's single writer thread, one ``BEGIN IMMEDIATE ... COMMIT``
per call, so changes are serialised, also across processes sharing the file: two claims
never lease the same downlink, and a row read in a change is still as read when written.
What a change makes of a row is decided in :mod:`tpas.storage.transitions`.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

from tpas.storage import downlink_sql, transitions
from tpas.storage.downlink_sql import DownlinkStatements, to_downlink
from tpas.storage.ports import Attempt, Downlink, DownlinkQuery, NewDownlink

__all__ = ["SqliteOutbox"]

_T = TypeVar("_T")
_DOWNLINKS = DownlinkStatements("?", lock="")  # the single writer is the lock


class SqliteOutbox(ABC):
    """The :class:`~tpas.storage.ports.DownlinkStore` half of the SQLite store."""

    @abstractmethod
    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the writer thread in one transaction; returns once committed."""

    @abstractmethod
    async def _read(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``read`` on a read-only connection."""

    async def create_downlink(self, new: NewDownlink) -> tuple[Downlink, bool]:
        """Insert as ``queued``; with a known idempotency key, return that downlink."""

        def write(conn: sqlite3.Connection) -> tuple[Downlink, bool]:
            if new.idempotency_key is not None:
                row = conn.execute(
                    _DOWNLINKS.by_key, (new.application, new.idempotency_key)
                ).fetchone()
                if row is not None:
                    return to_downlink(row), False
            params = (new.correlation_id.upper(),)
            if conn.execute(_DOWNLINKS.by_correlation_id, params).fetchone() is not None:
                raise transitions.correlation_id_taken(new.correlation_id)
            # The key was checked above under the write lock: this insert cannot conflict.
            row = conn.execute(_DOWNLINKS.insert, downlink_sql.insert_params(new)).fetchone()
            return to_downlink(row), True

        return await self._write(write)

    async def get_downlink(self, downlink_id: int) -> Downlink | None:
        """One downlink by id."""

        def read(conn: sqlite3.Connection) -> Downlink | None:
            row = conn.execute(_DOWNLINKS.select_one, (downlink_id,)).fetchone()
            return None if row is None else to_downlink(row)

        return await self._read(read)

    async def list_downlinks(self, query: DownlinkQuery) -> list[Downlink]:
        """Downlinks matching ``query``, newest first, at most ``query.limit``."""
        sql, params = _DOWNLINKS.query(query)

        def read(conn: sqlite3.Connection) -> list[Downlink]:
            return [to_downlink(row) for row in conn.execute(sql, params)]

        return await self._read(read)

    async def cancel_downlink(self, downlink_id: int, now: float) -> tuple[Downlink, bool] | None:
        """Cancel a ``queued`` downlink that no dispatcher holds right now."""

        def write(conn: sqlite3.Connection) -> tuple[Downlink, bool] | None:
            row = conn.execute(_DOWNLINKS.lock_one, (downlink_id,)).fetchone()
            if row is None:
                return None
            downlink, done = transitions.after_cancel(to_downlink(row), row[-1], now)
            if done:
                _update(conn, downlink)
            return downlink, done

        return await self._write(write)

    async def claim_due(
        self, now: float, limit: int, lease_seconds: float, worker: str
    ) -> list[Downlink]:
        """Lease up to ``limit`` due downlinks, at most the oldest queued one per device."""
        params = DownlinkStatements.claim_params(now, max(limit, 0), lease_seconds, worker)

        def write(conn: sqlite3.Connection) -> list[Downlink]:
            claimed = [to_downlink(row) for row in conn.execute(_DOWNLINKS.claim, params)]
            # RETURNING comes in no particular order.
            return sorted(claimed, key=lambda d: (d.next_attempt_at or 0.0, d.id))

        return await self._write(write)

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

        def write(conn: sqlite3.Connection) -> Downlink:
            downlink = transitions.after_attempt(
                _existing(conn, downlink_id),
                attempt,
                status=status,
                now=now,
                next_attempt_at=next_attempt_at,
                detail=detail,
            )
            _update(conn, downlink)
            return downlink

        return await self._write(write)

    async def finish_downlink(
        self, downlink_id: int, status: str, now: float, detail: str | None = None
    ) -> Downlink:
        """Move a non-terminal downlink to the terminal ``status``; a terminal one stays."""
        transitions.terminal_status(status)

        def write(conn: sqlite3.Connection) -> Downlink:
            downlink = _existing(conn, downlink_id)
            finished = transitions.after_finish(downlink, status, now, detail)
            if finished is not downlink:
                _update(conn, finished)
            return finished

        return await self._write(write)

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
        transitions.terminal_status(status)
        fallback_sql, fallback_params = _DOWNLINKS.lock_submitted(
            application, dev_eui, fport, fcnt_dn
        )

        def write(conn: sqlite3.Connection) -> Downlink | None:
            row = None
            if correlation_id is not None:
                params = (application, correlation_id.upper())
                row = conn.execute(_DOWNLINKS.lock_correlated, params).fetchone()
            if row is None:
                rows = conn.execute(fallback_sql, fallback_params).fetchall()
                row = rows[0] if rows else None
            if row is None:
                return None
            downlink = to_downlink(row)
            delivered = transitions.after_delivery(downlink, status, delivery, now)
            if delivered is not downlink:
                _update(conn, delivered)
            return delivered

        return await self._write(write)

    async def count_downlinks(self) -> dict[str, int]:
        """Number of downlinks per status (statuses without any are left out)."""

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            return {status: int(n) for status, n in conn.execute(_DOWNLINKS.count)}

        return await self._read(read)


def _existing(conn: sqlite3.Connection, downlink_id: int) -> Downlink:
    row = conn.execute(_DOWNLINKS.lock_one, (downlink_id,)).fetchone()
    if row is None:
        raise LookupError(f"no downlink with id {downlink_id}")
    return to_downlink(row)


def _update(conn: sqlite3.Connection, downlink: Downlink) -> None:
    conn.execute(_DOWNLINKS.update, downlink_sql.update_params(downlink))
