"""The PostgreSQL :class:`~tpas.storage.ports.Store`: psycopg 3 with a connection pool.

Each batch is committed with synchronous commit before :meth:`PostgresStore.add_many`
returns (QUALITY.md REL-1). Up to ``INSERT_CHUNK`` reports go in one multi-row INSERT with
PostgreSQL's own ``$n`` placeholders, sent as is: one round trip, and an atomic statement
that needs no BEGIN/COMMIT around it; a larger batch (heavy load, a spool replay) is one
transaction of several such statements. A report that hits a unique key is looked up
afterwards to report the id it duplicates. Several tpas processes may share one database:
the unique keys make a report delivered to two of them stored once, and row locks let them
share the downlink outbox (:mod:`tpas.storage.postgres_outbox`).

A pooled connection is checked (one round trip) before use and a dead one is replaced, so
the store recovers by itself from a PostgreSQL restart; a connection that answered less
than a second ago, with nothing unread from the server since, is lent without the check.
Driver errors become :class:`~tpas.errors.StorageUnavailable`, whose messages name the
server but never the password.
"""

from __future__ import annotations

import asyncio
import select
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import psycopg
from psycopg import AsyncConnection, AsyncRawCursor
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from tpas.errors import StorageUnavailable
from tpas.storage.migrations import TIME_LED_KEYS, apply_postgres
from tpas.storage.ports import (
    DeviceSummary,
    NewReport,
    ReportQuery,
    StoredReport,
    StoreOutcome,
)
from tpas.storage.postgres_outbox import PostgresOutbox
from tpas.storage.sql import (
    INSERT_CHUNK,
    Statements,
    duplicate_params,
    fold_devices,
    insert_params,
    inserted_ids,
    legacy_twins,
    numbered_insert_rows,
    to_stored,
)

__all__ = ["PostgresStore"]

_T = TypeVar("_T")
_SQL: Final = Statements("%s")

# Two processes inserting the same reports in different orders can deadlock; PostgreSQL
# aborts one of them, and running it again then finds the other's rows as duplicates.
_ATTEMPTS: Final = 3
_RETRYABLE: Final = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

_RECONNECT_TIMEOUT: Final = 10.0

# A connection that completed its work this recently is lent without the liveness check.
_RECENT: Final = 1.0

_Connection = AsyncConnection[tuple[Any, ...]]


def _describe(dsn: str) -> tuple[str, str | None]:
    """A printable ``user@host:port/dbname`` for ``dsn``, and its password if it has one."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparseable DSN)", None
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    where = f"{user}{params.get('host') or 'localhost'}{port}/{params.get('dbname') or ''}"
    password = params.get("password")
    return where, None if password is None else str(password)


async def _configure(conn: _Connection) -> None:
    # REL-1 needs a synchronous commit; a server configured with "off" is overridden
    # (stronger settings, like remote_apply for a synchronous standby, are kept).
    cursor = await conn.execute("SHOW synchronous_commit")
    row = await cursor.fetchone()
    if row is not None and row[0] == "off":
        await conn.execute("SET synchronous_commit = on")


class PostgresStore(PostgresOutbox):
    """A report store in a PostgreSQL database.

    ``dsn`` is a libpq connection string or URL (``postgresql://user@host:5432/db``); the
    tables go into the first schema of its search path. ``min_size``/``max_size`` size the
    pool; ``timeout`` (seconds) bounds the wait for a pooled connection, after which calls
    fail with :class:`StorageUnavailable`; ``connect_timeout`` bounds each new connection;
    ``ping_timeout`` bounds :meth:`ping`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 5.0,
        connect_timeout: int = 5,
        ping_timeout: float = 2.0,
    ) -> None:
        self._dsn = dsn
        self._where, self._password = _describe(dsn)
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ping_timeout = ping_timeout
        self._pool: AsyncConnectionPool[_Connection] | None = None
        # Pings given up on, kept referenced while their cancellation completes.
        self._pings: set[asyncio.Future[None]] = set()
        # When each pooled connection last completed its work without an error.
        self._answered: weakref.WeakKeyDictionary[_Connection, float] = weakref.WeakKeyDictionary()
        self._legacy_rows = False
        """Whether the database holds rows stored before schema version 4."""

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    async def open(self) -> None:
        """Apply pending migrations, then fill the pool."""
        if self._pool is not None:
            return
        try:
            async with await AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            ) as conn:
                if await apply_postgres(conn) >= TIME_LED_KEYS:
                    # Rows stored before schema version 4 keep their tokens in an index of
                    # their own, which inserts must then consult; none are added afterwards.
                    cursor = await conn.execute(
                        "SELECT EXISTS (SELECT 1 FROM reports WHERE signed_at IS NULL)"
                    )
                    row = await cursor.fetchone()
                    self._legacy_rows = bool(row and row[0])
        except psycopg.Error as exc:
            raise self._unavailable("cannot open", exc) from exc
        pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
            self._dsn,
            kwargs={"autocommit": True, "connect_timeout": self._connect_timeout},
            min_size=self._min_size,
            max_size=self._max_size,
            open=False,
            configure=_configure,
            timeout=self._timeout,
            # After giving up, the next request starts a fresh attempt at once, so a long
            # outage never leaves the pool sleeping through a long backoff once the server
            # is back.
            reconnect_timeout=_RECONNECT_TIMEOUT,
            name="tpas",
        )
        try:
            await pool.open(wait=True, timeout=self._timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise self._unavailable("cannot open", exc) from exc
        self._pool = pool

    async def close(self) -> None:
        """Close the pool, waiting for connections in use to come back."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def add_many(self, reports: Sequence[NewReport]) -> list[StoreOutcome]:
        """Store a batch atomically; returns once it is committed."""
        if not reports:
            self._require_pool()
            return []
        async with self._connection("cannot commit to") as conn:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    if len(reports) <= INSERT_CHUNK:
                        # One statement, on a connection in autocommit: PostgreSQL runs it
                        # in a transaction of its own and answers once that is committed.
                        return await self._insert(conn, reports)
                    async with conn.transaction():
                        return await self._insert(conn, reports)
                except _RETRYABLE:
                    if attempt == _ATTEMPTS:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, report_id: int) -> StoredReport | None:
        """One report by id, or ``None``."""
        async with self._connection("cannot read") as conn:
            cursor = await conn.execute(_SQL.select_one, (report_id,))
            row = await cursor.fetchone()
        return None if row is None else to_stored(row)

    async def get_body(self, report_id: int) -> tuple[bytes, str] | None:
        """The original body bytes and content type of one report, or ``None``."""
        async with self._connection("cannot read") as conn:
            cursor = await conn.execute(_SQL.select_body, (report_id,))
            row = await cursor.fetchone()
        return None if row is None else (bytes(row[0]), row[1])

    async def query(self, query: ReportQuery) -> list[StoredReport]:
        """Reports matching ``query``, newest first, at most ``query.limit``."""
        sql, params = _SQL.query(query)
        async with self._connection("cannot read") as conn:
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        return [to_stored(row) for row in rows]

    async def devices(self, application: str | None = None) -> list[DeviceSummary]:
        """Every device with at least one report, optionally for one application."""
        counts_sql, counts_params = _SQL.device_counts(application)
        radio_sql, radio_params = _SQL.device_radio(application)
        async with self._connection("cannot read") as conn, conn.transaction():
            # Both queries see the same snapshot.
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            counts = await (await conn.execute(counts_sql, counts_params)).fetchall()
            radio = await (await conn.execute(radio_sql, radio_params)).fetchall()
        return fold_devices(counts, radio)

    async def ping(self) -> None:
        """Run ``SELECT 1``; raise :class:`StorageUnavailable` unless it answers in time."""
        check = asyncio.ensure_future(self._select_1())
        # Not asyncio.timeout: on a hung server, psycopg's cancellation of the query waits
        # up to 10 s more for the server; here it finishes in the background.
        done, _ = await asyncio.wait({check}, timeout=self._ping_timeout)
        if not done:
            check.cancel()
            self._pings.add(check)
            check.add_done_callback(self._forget_ping)
            raise StorageUnavailable(
                f"PostgreSQL {self._where} did not answer within {self._ping_timeout} s"
            )
        check.result()

    def _forget_ping(self, check: asyncio.Future[None]) -> None:
        self._pings.discard(check)
        if not check.cancelled():
            check.exception()  # retrieved: the caller has had its answer

    async def _select_1(self) -> None:
        # Always checked first: a ping answers whether PostgreSQL is reachable now, and the
        # writer's spool replay waits on it after an outage.
        async with self._connection("cannot reach", self._ping_timeout, check=True) as conn:
            await conn.execute("SELECT 1")

    async def _insert(self, conn: _Connection, reports: Sequence[NewReport]) -> list[StoreOutcome]:
        ids: list[int | None] = []
        legacy: dict[int, int] = {}  # position in reports -> row stored before version 4
        # A raw cursor sends the statement as it is, without rewriting its placeholders.
        async with AsyncRawCursor(conn) as cursor:
            for start in range(0, len(reports), INSERT_CHUNK):
                chunk = reports[start : start + INSERT_CHUNK]
                if self._legacy_rows:
                    found = await self._legacy_twins(conn, chunk)
                    legacy.update((start + i, row_id) for i, row_id in found.items())
                    chunk = [r for i, r in enumerate(chunk) if i not in found]
                    if not chunk:
                        continue
                params = [value for report in chunk for value in insert_params(report)]
                await cursor.execute(numbered_insert_rows(len(chunk)), params)
                ids += inserted_ids(chunk, await cursor.fetchall())
        if legacy:
            # Back to one entry per report: the legacy twins are duplicates of those rows.
            inserted = iter(ids)
            return await self._settle_twins(
                conn,
                reports,
                [None if i in legacy else next(inserted) for i in range(len(reports))],
                legacy,
            )
        return await self._settle_twins(conn, reports, ids, {})

    async def _legacy_twins(self, conn: _Connection, chunk: Sequence[NewReport]) -> dict[int, int]:
        """Which of ``chunk`` repeat a token stored before schema version 4 (by position)."""
        pairs = [value for report in chunk for value in (report.application, report.token)]
        cursor = await conn.execute(_SQL.legacy_tokens(len(chunk)), pairs)
        return legacy_twins(chunk, await cursor.fetchall())

    async def _settle_twins(
        self,
        conn: _Connection,
        reports: Sequence[NewReport],
        ids: list[int | None],
        legacy: dict[int, int],
    ) -> list[StoreOutcome]:
        """Outcomes for ``reports``, given the id each was inserted under (``None``: a
        duplicate, of a row named in ``legacy`` or else looked up here)."""
        twins = [reports[i] for i, new_id in enumerate(ids) if new_id is None and i not in legacy]
        if not twins and not legacy:
            return [StoreOutcome(new_id, duplicate=False) for new_id in ids if new_id is not None]
        # Read committed: this statement sees rows committed meanwhile by other processes,
        # and the batch's own rows (twins inside one batch): committed already when the
        # batch was one statement, else written earlier in this transaction. Should it fail
        # after such a commit, the writer's spooled copy of the batch later finds the rows,
        # as after a COMMIT whose answer was lost.
        originals: list[int] = []
        async with conn.cursor() as cursor:
            if twins:
                await cursor.executemany(
                    _SQL.find_duplicate, [duplicate_params(r) for r in twins], returning=True
                )
                async for result in cursor.results():
                    row = await result.fetchone()
                    if row is None:  # only if a row were deleted meanwhile; tpas never deletes
                        raise StorageUnavailable(
                            f"a duplicate's original vanished from {self._where}"
                        )
                    originals.append(row[0])
        original = iter(originals)
        return [
            StoreOutcome(new_id, duplicate=False)
            if new_id is not None
            else StoreOutcome(legacy[i] if i in legacy else next(original), duplicate=True)
            for i, new_id in enumerate(ids)
        ]

    async def _transact(self, work: Callable[[_Connection], Awaitable[_T]]) -> _T:
        """Run ``work`` in one transaction, again after a deadlock (its locks are gone)."""
        async with self._connection("cannot commit to") as conn:
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    async with conn.transaction():
                        return await work(conn)
                except _RETRYABLE:
                    if attempt == _ATTEMPTS:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def _connection(
        self, action: str, timeout: float | None = None, *, check: bool = False
    ) -> AsyncIterator[_Connection]:
        """A live pooled connection; psycopg errors inside the block become StorageUnavailable.

        ``check``: make sure it is alive with a round trip, even if it answered just now.
        """
        pool = self._require_pool()
        try:
            conn = await self._live_connection(
                pool, self._timeout if timeout is None else timeout, check=check
            )
            try:
                yield conn
            except BaseException:
                # Whatever failed, the next borrower checks this connection first.
                self._answered.pop(conn, None)
                raise
            else:
                self._answered[conn] = time.monotonic()
            finally:
                await pool.putconn(conn)
        except psycopg.Error as exc:
            raise self._unavailable(action, exc) from exc

    async def _live_connection(
        self, pool: AsyncConnectionPool[_Connection], timeout: float, *, check: bool
    ) -> _Connection:
        # psycopg_pool's own check= sleeps with backoff (1 s, 2 s, ...) after each dead
        # connection, and after a server restart every idle connection is dead. Here a
        # dead one costs one round trip: the pool discards it and we take the next.
        deadline = time.monotonic() + timeout
        while True:
            conn = await pool.getconn(timeout=deadline - time.monotonic())
            if not check and self._answered_recently(conn):
                return conn
            try:
                await conn.execute("")
            except psycopg.OperationalError:
                await pool.putconn(conn)
                continue
            except BaseException:  # cancelled mid-check: give it back all the same
                await pool.putconn(conn)
                raise
            return conn

    def _answered_recently(self, conn: _Connection) -> bool:
        """Whether ``conn`` may skip the liveness check: it completed its last work less than
        ``_RECENT`` seconds ago, and nothing has arrived from the server since.

        A backend that exits (PostgreSQL stopped or restarted, the backend terminated) sends
        an error and closes the socket, which shows here as readable, so such a connection
        is still checked and replaced. One that dies without a word (a lost network or
        host) fails its statement instead, with :class:`StorageUnavailable`: the writer
        (:class:`~tpas.services.writer.ReportWriter`) then puts the batch in its spool,
        fsync'd, and stores it later, so no acknowledged report is lost.
        """
        answered = self._answered.get(conn)
        if answered is None or time.monotonic() - answered > _RECENT:
            return False
        try:
            poll = select.poll()
            poll.register(conn.fileno(), select.POLLIN)
        except (psycopg.Error, OSError, ValueError):
            return False
        return not poll.poll(0)

    def _require_pool(self) -> AsyncConnectionPool[_Connection]:
        if self._pool is None:
            raise StorageUnavailable(f"PostgreSQL store {self._where} is not open")
        return self._pool

    def _unavailable(self, action: str, exc: psycopg.Error) -> StorageUnavailable:
        detail = " ".join(str(exc).split())
        if self._password:
            detail = detail.replace(self._password, "***")
        return StorageUnavailable(f"{action} PostgreSQL {self._where}: {detail}")
