"""The downlink outbox of :class:`~tpas.storage.postgres.PostgresStore`.

Several processes may share the outbox. A claim is one statement that locks the due rows
with ``FOR UPDATE SKIP LOCKED`` and leases them: rows another process is claiming at the
same moment are passed over, and once it commits their lease keeps them out. Every other
change locks the rows it reads (``FOR UPDATE``) in one transaction, so what it writes is
decided (in :mod:`tpas.storage.transitions`) on the row as it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, TypeVar

import psycopg
from psycopg import AsyncConnection

from tpas.storage import downlink_sql, transitions
from tpas.storage.downlink_sql import DownlinkStatements, to_downlink
from tpas.storage.ports import Attempt, Downlink, DownlinkQuery, NewDownlink

__all__ = ["PostgresOutbox"]

_T = TypeVar("_T")
_DOWNLINKS: Final = DownlinkStatements("%s", lock=" FOR UPDATE")

_Connection = AsyncConnection[tuple[Any, ...]]


class PostgresOutbox(ABC):
    """The :class:`~tpas.storage.ports.DownlinkStore` half of the PostgreSQL store."""

    @abstractmethod
    def _connection(
        self, action: str, timeout: float | None = None
    ) -> AbstractAsyncContextManager[_Connection]:
        """A live pooled connection; driver errors inside become StorageUnavailable."""

    @abstractmethod
    async def _transact(self, work: Callable[[_Connection], Awaitable[_T]]) -> _T:
        """Run ``work`` in one transaction, again after a deadlock."""

    async def create_downlink(self, new: NewDownlink) -> tuple[Downlink, bool]:
        """Insert as ``queued``; with a known idempotency key, return that downlink.

        Two processes creating the same key at once: ON CONFLICT makes the second wait for
        the first to commit, then insert nothing and read the first one's row.
        """
        async with self._connection("cannot commit to") as conn:
            try:
                cursor = await conn.execute(_DOWNLINKS.insert, downlink_sql.insert_params(new))
                row = await cursor.fetchone()
            except psycopg.errors.UniqueViolation:
                # The CorrelationID is taken, unless a concurrent insert with the same key
                # tripped over it before the idempotency key was checked.
                row = None
            else:
                if row is not None:
                    return to_downlink(row), True
            if new.idempotency_key is not None:
                cursor = await conn.execute(
                    _DOWNLINKS.by_key, (new.application, new.idempotency_key)
                )
                existing = await cursor.fetchone()
                if existing is not None:
                    return to_downlink(existing), False
        raise transitions.correlation_id_taken(new.correlation_id)

    async def get_downlink(self, downlink_id: int) -> Downlink | None:
        """One downlink by id."""
        async with self._connection("cannot read") as conn:
            cursor = await conn.execute(_DOWNLINKS.select_one, (downlink_id,))
            row = await cursor.fetchone()
        return None if row is None else to_downlink(row)

    async def list_downlinks(self, query: DownlinkQuery) -> list[Downlink]:
        """Downlinks matching ``query``, newest first, at most ``query.limit``."""
        sql, params = _DOWNLINKS.query(query)
        async with self._connection("cannot read") as conn:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        return [to_downlink(row) for row in rows]

    async def cancel_downlink(self, downlink_id: int, now: float) -> tuple[Downlink, bool] | None:
        """Cancel a ``queued`` downlink that no dispatcher holds right now."""

        async def work(conn: _Connection) -> tuple[Downlink, bool] | None:
            cursor = await conn.execute(_DOWNLINKS.lock_one, (downlink_id,))
            row = await cursor.fetchone()
            if row is None:
                return None
            downlink, done = transitions.after_cancel(to_downlink(row), row[-1], now)
            if done:
                await _update(conn, downlink)
            return downlink, done

        return await self._transact(work)

    async def claim_due(
        self, now: float, limit: int, lease_seconds: float, worker: str
    ) -> list[Downlink]:
        """Lease up to ``limit`` due downlinks, at most the oldest queued one per device.

        One statement, so one transaction: rows another process is claiming are skipped,
        and once it commits their lease keeps them out.
        """
        params = DownlinkStatements.claim_params(now, max(limit, 0), lease_seconds, worker)
        async with self._connection("cannot commit to") as conn:
            cursor = await conn.execute(_DOWNLINKS.claim, params)
            rows = await cursor.fetchall()
        # RETURNING comes in no particular order.
        return sorted(map(to_downlink, rows), key=lambda d: (d.next_attempt_at or 0.0, d.id))

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

        async def work(conn: _Connection) -> Downlink:
            downlink = transitions.after_attempt(
                await _existing(conn, downlink_id),
                attempt,
                status=status,
                now=now,
                next_attempt_at=next_attempt_at,
                detail=detail,
            )
            await _update(conn, downlink)
            return downlink

        return await self._transact(work)

    async def finish_downlink(
        self, downlink_id: int, status: str, now: float, detail: str | None = None
    ) -> Downlink:
        """Move a non-terminal downlink to the terminal ``status``; a terminal one stays."""
        transitions.terminal_status(status)

        async def work(conn: _Connection) -> Downlink:
            downlink = await _existing(conn, downlink_id)
            finished = transitions.after_finish(downlink, status, now, detail)
            if finished is not downlink:
                await _update(conn, finished)
            return finished

        return await self._transact(work)

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

        async def work(conn: _Connection) -> Downlink | None:
            row = None
            if correlation_id is not None:
                params = (application, correlation_id.upper())
                row = await (await conn.execute(_DOWNLINKS.lock_correlated, params)).fetchone()
            if row is None:
                rows = await (await conn.execute(fallback_sql, fallback_params)).fetchall()
                row = rows[0] if rows else None
            if row is None:
                return None
            downlink = to_downlink(row)
            delivered = transitions.after_delivery(downlink, status, delivery, now)
            if delivered is not downlink:
                await _update(conn, delivered)
            return delivered

        return await self._transact(work)

    async def count_downlinks(self) -> dict[str, int]:
        """Number of downlinks per status (statuses without any are left out)."""
        async with self._connection("cannot read") as conn:
            cursor = await conn.execute(_DOWNLINKS.count)
            rows = await cursor.fetchall()
        return {status: int(n) for status, n in rows}


async def _existing(conn: _Connection, downlink_id: int) -> Downlink:
    cursor = await conn.execute(_DOWNLINKS.lock_one, (downlink_id,))
    row = await cursor.fetchone()
    if row is None:
        raise LookupError(f"no downlink with id {downlink_id}")
    return to_downlink(row)


async def _update(conn: _Connection, downlink: Downlink) -> None:
    await conn.execute(_DOWNLINKS.update, downlink_sql.update_params(downlink))
