"""The downlink outbox's SQL, shared by SQLite and PostgreSQL, and its row codec.

As in :mod:`tpas.storage.sql`, the statements are written once; the dialects differ in
the placeholder and in row locks, which only PostgreSQL has (SQLite serialises every
write through one connection instead). Column lists come from :class:`Downlink`.

``attempts`` and ``delivery`` are JSON: TEXT in SQLite, JSONB in PostgreSQL (psycopg
hands JSONB back already decoded; :func:`to_downlink` accepts both).
"""

# S608 (SQL built from strings): every value goes through a placeholder; the f-strings
# here splice only constant column lists, constant clauses and the placeholder itself.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any, Final

from tpas.storage.ports import Attempt, Downlink, DownlinkQuery, DownlinkStatus, NewDownlink
from tpas.storage.transitions import first_queued

__all__ = ["DownlinkStatements", "insert_params", "to_downlink", "update_params"]

_COLUMNS: Final = tuple(f.name for f in fields(Downlink))
_INSERTED: Final = (*(f.name for f in fields(NewDownlink)), "status", "next_attempt_at")
_CHANGING: Final = (
    "status",
    "next_attempt_at",
    "submitted_at",
    "finished_at",
    "detail",
    "attempts",
    "delivery",
)
_SELECT: Final = ", ".join(_COLUMNS)
_QUEUED: Final = f"'{DownlinkStatus.QUEUED.value}'"
_SUBMITTED: Final = f"'{DownlinkStatus.SUBMITTED.value}'"


class DownlinkStatements:
    """The outbox statements of one dialect; ``ph`` is its placeholder, ``lock`` its row
    lock clause (``" FOR UPDATE"``, or ``""`` where the database has none).

    - ``insert``: a new downlink, returned; no row when its idempotency key is taken.
    - ``by_key``: the downlink of (application, idempotency key).
    - ``by_correlation_id``: the id of the downlink holding a CorrelationID, any application.
    - ``select_one``: one downlink by id.
    - ``lock_one``: one downlink by id and its ``lease_until``, locked.
    - ``lock_correlated``: the downlink of (application, CorrelationID), locked.
    - ``update``: write the changing columns of :func:`update_params`, release the lease.
    - ``claim``: lease what is due (see :meth:`claim_params`), returning the leased rows.
    - ``count``: rows of (status, count).
    """

    __slots__ = (
        "by_correlation_id",
        "by_key",
        "claim",
        "count",
        "insert",
        "lock",
        "lock_correlated",
        "lock_one",
        "ph",
        "select_one",
        "update",
    )

    def __init__(self, ph: str, *, lock: str) -> None:
        self.ph = ph
        self.lock = lock
        self.insert = (
            f"INSERT INTO downlinks ({', '.join(_INSERTED)}) "
            f"VALUES ({', '.join([ph] * len(_INSERTED))}) "
            f"ON CONFLICT (application, idempotency_key) DO NOTHING RETURNING {_SELECT}"
        )
        self.by_key = (
            f"SELECT {_SELECT} FROM downlinks WHERE application = {ph} AND idempotency_key = {ph}"
        )
        self.by_correlation_id = f"SELECT id FROM downlinks WHERE correlation_id = {ph}"
        self.select_one = f"SELECT {_SELECT} FROM downlinks WHERE id = {ph}"
        self.lock_one = f"SELECT {_SELECT}, lease_until FROM downlinks WHERE id = {ph}{lock}"
        self.lock_correlated = (
            f"SELECT {_SELECT} FROM downlinks "
            f"WHERE application = {ph} AND correlation_id = {ph}{lock}"
        )
        self.update = (
            f"UPDATE downlinks SET {', '.join(f'{c} = {ph}' for c in _CHANGING)}, "
            f"lease_until = NULL, lease_owner = NULL WHERE id = {ph}"
        )
        # Per device, only the oldest queued downlink may go, whether or not it is due or
        # leased itself. SKIP LOCKED (PostgreSQL) passes over rows another process is
        # claiming right now; once it commits, their lease keeps them out of later claims.
        # The CTE is evaluated once (a locking CTE is never inlined), so every row it
        # locked is the row updated.
        skip_locked = f"{lock} SKIP LOCKED" if lock else ""
        self.claim = (
            "WITH due AS ("
            "SELECT d.id FROM downlinks d "
            f"WHERE d.status = {_QUEUED} AND d.next_attempt_at <= {ph} "
            f"AND (d.lease_until IS NULL OR d.lease_until < {ph}) "
            "AND NOT EXISTS (SELECT 1 FROM downlinks e WHERE e.application = d.application "
            f"AND e.dev_eui = d.dev_eui AND e.status = {_QUEUED} AND e.id < d.id) "
            f"ORDER BY d.next_attempt_at, d.id LIMIT {ph}{skip_locked}) "
            f"UPDATE downlinks SET lease_until = {ph}, lease_owner = {ph} "
            f"WHERE id IN (SELECT id FROM due) RETURNING {_SELECT}"
        )
        self.count = "SELECT status, COUNT(*) FROM downlinks GROUP BY status"

    @staticmethod
    def claim_params(
        now: float, limit: int, lease_seconds: float, worker: str
    ) -> tuple[float, float, int, float, str]:
        """The parameters of :attr:`claim`."""
        return (now, now, limit, now + lease_seconds, worker)

    def lock_submitted(
        self, application: str, dev_eui: str, fport: int | None, fcnt_dn: int | None
    ) -> tuple[str, list[Any]]:
        """The ``submitted`` downlinks a delivery report without a known CorrelationID may
        answer, oldest first, locked: same DevEUI and FPort, and the same FCntDn when the
        downlink has one.

        No LIMIT: with one, PostgreSQL may return nothing when the first row it locks
        changed meanwhile, instead of moving on to the next.
        """
        p = self.ph
        port = "fport IS NULL" if fport is None else f"fport = {p}"
        sql = (
            f"SELECT {_SELECT} FROM downlinks WHERE application = {p} AND dev_eui = {p} "
            f"AND status = {_SUBMITTED} AND {port} AND (fcnt_dn IS NULL OR fcnt_dn = {p}) "
            f"ORDER BY id{self.lock}"
        )
        params: list[Any] = [application, dev_eui.upper()]
        if fport is not None:
            params.append(fport)
        params.append(fcnt_dn)
        return sql, params

    def query(self, query: DownlinkQuery) -> tuple[str, list[Any]]:
        """A filtered page of downlinks, newest first, and its parameters."""
        p = self.ph
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (
            (f"application = {p}", query.application),
            (f"dev_eui = {p}", None if query.dev_eui is None else query.dev_eui.upper()),
            (f"status = {p}", query.status),
            (f"id < {p}", query.before_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        params.append(max(query.limit, 0))  # SQLite reads a negative LIMIT as "no limit"
        return f"SELECT {_SELECT} FROM downlinks{condition} ORDER BY id DESC LIMIT {p}", params


def insert_params(new: NewDownlink) -> tuple[Any, ...]:
    """The parameters of :attr:`DownlinkStatements.insert`."""
    stored = first_queued(new, 0)
    return tuple(getattr(stored, name) for name in _INSERTED)


def update_params(downlink: Downlink) -> tuple[Any, ...]:
    """The parameters of :attr:`DownlinkStatements.update`: what changes, then the id."""
    return (
        downlink.status,
        downlink.next_attempt_at,
        downlink.submitted_at,
        downlink.finished_at,
        downlink.detail,
        _dumps([asdict(a) for a in downlink.attempts]),
        None if downlink.delivery is None else _dumps(downlink.delivery),
        downlink.id,
    )


def to_downlink(row: Sequence[Any]) -> Downlink:
    """A row selected with the downlink columns (any further columns are ignored)."""
    values = dict(zip(_COLUMNS, row, strict=False))
    for name in ("created_at", "expires_at", "next_attempt_at", "submitted_at", "finished_at"):
        # SQLite's RETURNING gives a whole REAL as an integer.
        if values[name] is not None:
            values[name] = float(values[name])
    values["confirmed"] = bool(values["confirmed"])  # SQLite stores 0 or 1
    values["flush_queue"] = bool(values["flush_queue"])
    values["attempts"] = tuple(_attempt(a) for a in _loads(values["attempts"]))
    values["delivery"] = _loads(values["delivery"])
    return Downlink(**values)


def _attempt(value: dict[str, Any]) -> Attempt:
    return Attempt(
        number=int(value["number"]),
        at=float(value["at"]),
        outcome=value["outcome"],
        http_status=value.get("http_status"),
        message=value.get("message", ""),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(value: Any) -> Any:
    # TEXT from SQLite; JSONB comes decoded from psycopg.
    return json.loads(value) if isinstance(value, str | bytes) else value
