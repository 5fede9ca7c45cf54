"""The SQLite :class:`~tpas.storage.ports.Store`: one writer thread, pooled readers.

The database runs in WAL mode with ``synchronous=FULL``, so a committed batch survives a
power cut (QUALITY.md REL-1). One dedicated thread owns the only write connection: SQLite
allows one writer at a time anyway, and a single owner never waits on its own lock.
:meth:`SqliteStore.add_many` hands its batch to that thread and awaits the outcome; each
batch is one ``BEGIN IMMEDIATE ... COMMIT``. Every change to the downlink outbox
(:mod:`tpas.storage.sqlite_outbox`) goes the same way, one transaction per call. Reads
run on a few worker threads with read-only connections, which WAL lets proceed while the
writer commits.

Every sqlite3 error becomes :class:`~tpas.errors.StorageUnavailable`, and no transaction
is left open after one.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from tpas.errors import StorageUnavailable
from tpas.storage.migrations import TIME_LED_KEYS, apply_sqlite
from tpas.storage.ports import (
    DeviceSummary,
    NewReport,
    ReportQuery,
    StoredReport,
    StoreOutcome,
)
from tpas.storage.sql import (
    INSERT_CHUNK,
    Statements,
    duplicate_params,
    fold_devices,
    insert_params,
    inserted_ids,
    latest_params,
    legacy_twins,
    to_stored,
)
from tpas.storage.sqlite_outbox import SqliteOutbox

__all__ = ["SqliteStore"]

_T = TypeVar("_T")
_MERGE_MAX = 64

# Seconds between checkpoints of the write-ahead log: often, so that each one writes little
# at a time. A commit whose fsync waits behind a checkpoint's writes is the slowest there
# is: a second's worth at full load gave an ingest bench p99 of 21-37 ms. Once the
# time-led keys of schema 4 had made the server faster, 0.25 s gave 21-48 ms (four runs)
# and 0.1 s 10-13 ms (two), at the same rate. (Before schema 4, with four log pages per
# report rather than one and a half, 0.1 s cost a tenth of the rate.)
_CHECKPOINT_INTERVAL = 0.1
_RETRY_PAUSE = 0.02  # seconds between attempts to prepare a database another process holds
_WAL_LIMIT = 64 * 1024 * 1024  # bytes of write-ahead log past which the writer empties it
_CACHE_KIB = 4 * 1024  # the writer's page cache
_SQL = Statements("?")


Outcome = Callable[[_T | None, BaseException | None], None]
"""Told what became of a batch: ``(result, None)`` once committed, ``(None, error)`` if not."""


@dataclass(frozen=True, slots=True)
class _Job(Generic[_T]):
    """Work for the writer thread: run ``work`` in one transaction, then ``deliver`` its
    result (on the writer thread: ``deliver`` passes it to the caller's event loop)."""

    work: Callable[[sqlite3.Connection], _T]
    deliver: Callable[[_T | None, BaseException | None], None]
    reports: Sequence[NewReport] | None = None
    """Set when the job only inserts these reports: such jobs can share one statement."""


def _on_loop(loop: asyncio.AbstractEventLoop, outcome: Outcome[_T]) -> Outcome[_T]:
    """``outcome``, called on ``loop`` from another thread."""

    def deliver(result: _T | None, error: BaseException | None) -> None:
        # A closed loop has nobody left waiting.
        with suppress(RuntimeError):
            loop.call_soon_threadsafe(outcome, result, error)

    return deliver


def _resolve(future: asyncio.Future[_T], result: _T | None, error: BaseException | None) -> None:
    """Settle ``future`` (on its loop) unless the awaiting task was cancelled."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]  # None only with an error


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[_T],
    result: _T | None,
    error: BaseException | None,
) -> None:
    """Resolve ``future`` from another thread."""
    _on_loop(loop, partial(_resolve, future))(result, error)


class SqliteStore(SqliteOutbox):
    """A report store in one SQLite file.

    ``path`` is the database file; its directory must exist. ``busy_timeout`` (seconds)
    bounds how long a write waits for a lock held by another process before failing with
    :class:`StorageUnavailable`; ``readers`` is the number of concurrent read threads.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0, readers: int = 4
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._reader_count = readers
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._checkpoint_now = threading.Event()
        self._catch_up = False
        """Set by the checkpointer when the writer should finish a checkpoint."""
        self._legacy_rows = False
        """Whether the database holds rows stored before schema version 4."""

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        """Start the writer (which applies migrations) and the readers."""
        if self._writer is not None:
            return
        directory = self.path.absolute().parent
        if not directory.is_dir():
            raise StorageUnavailable(
                f"cannot open SQLite database {self.path}: directory {directory} does not exist"
            )
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._jobs = queue.SimpleQueue()
        writer = threading.Thread(
            target=self._write_loop, args=(loop, ready), name="tpas-sqlite-writer", daemon=True
        )
        writer.start()
        try:
            await ready
        except BaseException:
            self._jobs.put(None)  # harmless if the writer already gave up
            await asyncio.to_thread(writer.join)
            raise
        self._writer = writer
        self._readers = ThreadPoolExecutor(self._reader_count, "tpas-sqlite-read")
        self._stop_checkpoints = threading.Event()
        self._checkpoint_now = threading.Event()
        self._catch_up = False
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="tpas-sqlite-checkpoint", daemon=True
        )
        self._checkpointer.start()

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        writer, readers = self._writer, self._readers
        self._writer = self._readers = None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            self._stop_checkpoints.set()
            self._checkpoint_now.set()
            await asyncio.to_thread(checkpointer.join)
        if readers is not None:
            await asyncio.to_thread(readers.shutdown)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        if writer is not None:
            self._jobs.put(None)  # after every write already queued
            await asyncio.to_thread(writer.join)

    async def add_many(self, reports: Sequence[NewReport]) -> list[StoreOutcome]:
        """Store a batch in one transaction; returns once it is committed."""
        self._require_writer()
        if not reports:
            return []
        future: asyncio.Future[list[StoreOutcome]] = asyncio.get_running_loop().create_future()
        self.submit_many(reports, partial(_resolve, future))
        return await future

    def submit_many(
        self, reports: Sequence[NewReport], outcome: Outcome[list[StoreOutcome]]
    ) -> None:
        """Queue a batch for the writer thread now, without awaiting it: ``outcome`` is
        called on the running event loop once the batch is committed (with one
        :class:`StoreOutcome` per report) or has failed (with the error).

        What :meth:`add_many` does, minus a task: the report writer hands its batches
        over in the same loop iteration as it takes them (``tpas.services.writer``).
        Raises :class:`StorageUnavailable` when the store is not open.
        """
        self._require_writer()
        deliver = _on_loop(asyncio.get_running_loop(), outcome)
        self._jobs.put(_Job(partial(self._insert, reports=reports), deliver, reports))

    async def get(self, report_id: int) -> StoredReport | None:
        """One report by id, or ``None``."""

        def read(conn: sqlite3.Connection) -> StoredReport | None:
            row = conn.execute(_SQL.select_one, (report_id,)).fetchone()
            return None if row is None else to_stored(row)

        return await self._read(read)

    async def get_body(self, report_id: int) -> tuple[bytes, str] | None:
        """The original body bytes and content type of one report, or ``None``."""

        def read(conn: sqlite3.Connection) -> tuple[bytes, str] | None:
            row = conn.execute(_SQL.select_body, (report_id,)).fetchone()
            return None if row is None else (bytes(row[0]), row[1])

        return await self._read(read)

    async def query(self, query: ReportQuery) -> list[StoredReport]:
        """Reports matching ``query``, newest first, at most ``query.limit``."""
        sql, params = _SQL.query(query)

        def read(conn: sqlite3.Connection) -> list[StoredReport]:
            return [to_stored(row) for row in conn.execute(sql, params)]

        return await self._read(read)

    async def devices(self, application: str | None = None) -> list[DeviceSummary]:
        """Every device with at least one report, optionally for one application."""
        counts_sql, counts_params = _SQL.device_counts(application)
        radio_sql, radio_params = _SQL.device_radio(application)

        def read(conn: sqlite3.Connection) -> list[DeviceSummary]:
            conn.execute("BEGIN")  # both queries see the same snapshot
            counts = conn.execute(counts_sql, counts_params).fetchall()
            radio = conn.execute(radio_sql, radio_params).fetchall()
            conn.execute("COMMIT")
            return fold_devices(counts, radio)

        return await self._read(read)

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` unless the writer runs and the file is readable."""
        if self._writer is not None and not self._writer.is_alive():
            raise StorageUnavailable(f"the writer of SQLite database {self.path} has stopped")
        await self._read(
            lambda conn: conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        )

    # The writer thread.

    def _write_loop(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect_writer()
        except BaseException as exc:
            _settle(loop, ready, None, exc)
            return
        _settle(loop, ready, None, None)
        try:
            while (job := self._jobs.get()) is not None:
                # Every job already waiting shares this transaction, and so one fsync:
                # the writer's group commit across concurrent callers.
                jobs, stopping = [job], False
                while len(jobs) < _MERGE_MAX:
                    try:
                        waiting = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if waiting is None:
                        stopping = True
                        break
                    jobs.append(waiting)
                if not self._insert_alone(conn, jobs):
                    self._run_jobs(conn, jobs)
                self._bound_wal(conn)
                if stopping:
                    break
        finally:
            conn.close()

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        """Let the write-ahead log start over once it is past ``_WAL_LIMIT``.

        The PASSIVE checkpoints beside the writer copy the log into the database, but a log
        starts over only when a checkpoint has copied all of it, and while commits keep
        arriving the one beside the writer never catches up: the file grew without end
        (~15 GB an hour at 200 reports/s, bench/soak.py). So, once the log is past the
        limit, the writer wakes the checkpointer, which copies most of it beside the
        writer; when that is done, the writer runs one PASSIVE checkpoint itself between
        two of its transactions, with the batch just committed already answered. Nothing
        is written meanwhile, so that one catches up, and it is short: only what was
        committed during the checkpointer's run is left to copy. The next commit then
        writes the log from its start again, and cuts the file back to the limit
        (``journal_size_limit``). Should the checkpointer fall behind all the same (the
        log at twice the limit), the writer catches up on its own at once.
        """
        if self._catch_up:
            self._catch_up = False
            with suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return
        size = self._wal_size()
        if size <= _WAL_LIMIT:
            return
        if size <= 2 * _WAL_LIMIT:
            self._checkpoint_now.set()
            return
        with suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _wal_size(self) -> int:
        try:
            return os.stat(f"{self.path}-wal").st_size
        except OSError:
            return 0

    def _insert_alone(self, conn: sqlite3.Connection, jobs: list[_Job[Any]]) -> bool:
        """Store the reports of ``jobs`` with one INSERT statement outside any explicit
        transaction, if they are all report inserts and fit in one statement; returns
        whether it did (and settled the jobs).

        The statement is then its own transaction, committed (and synced) when it ends:
        one call into SQLite instead of three (BEGIN, INSERT, COMMIT), and every call
        gives up the GIL and must win it back from the busy event loop. The lookups of
        duplicates that may follow read what is committed, which only this thread writes
        (one tpas process per SQLite database). If the INSERT fails, nothing is committed
        and the jobs go through :meth:`_run_jobs` as usual; if a lookup after it fails
        (rare: a read error), that rerun finds the rows stored and answers duplicate.
        """
        reports: list[NewReport] = []
        for job in jobs:
            if job.reports is None:
                return False
            reports += job.reports
        if len(reports) > INSERT_CHUNK:
            return False
        try:
            outcomes = self._insert(conn, reports=reports)
        except Exception:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return False
        start = 0
        for job in jobs:
            assert job.reports is not None
            end = start + len(job.reports)
            job.deliver(outcomes[start:end], None)
            start = end
        return True

    def _run_jobs(self, conn: sqlite3.Connection, jobs: list[_Job[Any]]) -> None:
        """Run ``jobs`` in one transaction, then settle them.

        Every SQLite call gives up the GIL and must win it back from the busy event loop,
        so a transaction makes as few calls as it can: no savepoint per job. If a job
        raises, nothing is committed and each job runs again in a transaction of its own,
        so that only the failing one gets its error; if the commit itself fails, every job
        gets that error.
        """
        results: list[Any] = []
        failed_job = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                failed_job = True
                results.append(job.work(conn))
                failed_job = False
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if failed_job and len(jobs) > 1 and isinstance(exc, Exception):
                for job in jobs:
                    self._run_jobs(conn, [job])
                return
            failure = self._translated(exc)
            for job in jobs:
                job.deliver(None, failure)
            return
        for job, result in zip(jobs, results, strict=True):
            job.deliver(result, None)

    def _translated(self, exc: BaseException) -> BaseException:
        """A sqlite3 error as StorageUnavailable (chained, as ``raise ... from`` would)."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        error = self._unavailable("cannot commit to", exc)
        error.__cause__ = exc
        return error

    def _checkpoint_loop(self) -> None:
        """Copy the write-ahead log into the database every ``_CHECKPOINT_INTERVAL``, and
        when the writer asks, on a connection of its own: a PASSIVE checkpoint runs beside
        the writer instead of inside a commit (the writer's automatic checkpoint is off), so
        no commit waits for it. A log still past the limit afterwards is left for the writer
        to finish (:meth:`_bound_wal`)."""
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error:
            return
        try:
            while True:
                self._checkpoint_now.wait(_CHECKPOINT_INTERVAL)
                self._checkpoint_now.clear()
                if self._stop_checkpoints.is_set():
                    break
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                if self._wal_size() > _WAL_LIMIT:
                    self._catch_up = True
        finally:
            conn.close()

    def _connect_writer(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unavailable("cannot open", exc) from exc
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                self._prepare_writer(conn)
            except sqlite3.OperationalError as exc:
                # Several processes opening a new database at once: SQLite may refuse the
                # switch to WAL at once ("database is locked") rather than wait.
                if "locked" in str(exc) and time.monotonic() < deadline:
                    time.sleep(_RETRY_PAUSE)
                    continue
                conn.close()
                raise self._unavailable("cannot prepare", exc) from exc
            except sqlite3.Error as exc:
                conn.close()
                raise self._unavailable("cannot prepare", exc) from exc
            except BaseException:
                conn.close()
                raise
            return conn

    def _prepare_writer(self, conn: sqlite3.Connection) -> None:
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise StorageUnavailable(
                f"SQLite database {self.path} cannot use WAL mode (journal mode {mode!r})"
            )
        conn.execute("PRAGMA synchronous = FULL")
        # Checkpoints are run beside the writer instead (_checkpoint_loop).
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        # A log that outgrew the limit is cut back to it when it starts over, so that its
        # size tells _bound_wal whether it has outgrown the limit again since.
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT}")
        # A small page cache: SQLite's work at the end of each write transaction grows with
        # the cache, and at 64 MiB it cost the writer more than the reads a small cache
        # sends to the operating system's (which keeps the file): 45 µs per report against
        # 35 (ingest bench, 23-report commits). Readers keep the default (2 MiB).
        conn.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        # A multi-row statement inside a transaction keeps a statement journal: in memory
        # rather than a temporary file created and unlinked in every commit.
        conn.execute("PRAGMA temp_store = MEMORY")
        if apply_sqlite(conn) >= TIME_LED_KEYS:
            # Rows stored before schema version 4 keep their tokens in an index of their
            # own, which inserts must then consult; none are added after the migration.
            (legacy,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM reports WHERE signed_at IS NULL)"
            ).fetchone()
            self._legacy_rows = bool(legacy)

    def _insert(
        self, conn: sqlite3.Connection, *, reports: Sequence[NewReport]
    ) -> list[StoreOutcome]:
        outcomes: list[StoreOutcome] = []
        for start in range(0, len(reports), INSERT_CHUNK):
            chunk = reports[start : start + INSERT_CHUNK]
            twins: dict[int, int] = {}
            if self._legacy_rows:
                pairs = [value for report in chunk for value in (report.application, report.token)]
                rows = conn.execute(_SQL.legacy_tokens(len(chunk)), pairs).fetchall()
                twins = legacy_twins(chunk, rows)
            if not twins:
                outcomes += self._insert_chunk(conn, chunk)
                continue
            fresh = [report for i, report in enumerate(chunk) if i not in twins]
            stored = iter(self._insert_chunk(conn, fresh) if fresh else [])
            outcomes += [
                StoreOutcome(twins[i], duplicate=True) if i in twins else next(stored)
                for i in range(len(chunk))
            ]
        return outcomes

    @staticmethod
    def _insert_chunk(conn: sqlite3.Connection, chunk: Sequence[NewReport]) -> list[StoreOutcome]:
        """Insert up to INSERT_CHUNK reports with one statement."""
        # Without RETURNING: the writer would give up and retake the GIL for every
        # returned row. When every row of a statement is inserted, their ids are
        # consecutive, in the order of its VALUES, ending at lastrowid (this connection
        # holds the write lock, and ids only grow).
        params = [value for report in chunk for value in insert_params(report)]
        cursor = conn.execute(_SQL.insert_rows(len(chunk), returning=False), params)
        inserted, last = cursor.rowcount, cursor.lastrowid
        if inserted == len(chunk) and last is not None:
            first = last - inserted + 1
            return [StoreOutcome(first + i, duplicate=False) for i in range(inserted)]
        # Some were duplicates (rare): which reports did this statement insert? Its rows
        # are the newest of those sharing a token with the chunk (ids only grow).
        returned: list[Any] = []
        if inserted > 0:
            keys, params = latest_params(chunk, inserted)
            returned = conn.execute(_SQL.latest_by_token(keys), params).fetchall()
        outcomes: list[StoreOutcome] = []
        for report, row_id in zip(chunk, inserted_ids(chunk, returned), strict=True):
            if row_id is not None:
                outcomes.append(StoreOutcome(row_id, duplicate=False))
                continue
            (existing,) = conn.execute(_SQL.find_duplicate, duplicate_params(report)).fetchone()
            outcomes.append(StoreOutcome(existing, duplicate=True))
        return outcomes

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the writer thread in one transaction; returns once committed."""
        self._require_writer()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._jobs.put(_Job(work, _on_loop(loop, partial(_resolve, future))))
        return await future

    def _require_writer(self) -> None:
        if self._writer is None:
            raise StorageUnavailable(f"SQLite database {self.path} is not open")

    # The readers.

    async def _read(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        readers = self._readers
        if readers is None:
            raise StorageUnavailable(f"SQLite database {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(readers, self._run_read, read)

    def _run_read(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect_reader()
        try:
            return read(conn)
        except sqlite3.Error as exc:
            raise self._unavailable("cannot read", exc) from exc
        finally:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self._idle.put(conn)

    def _connect_reader(self) -> sqlite3.Connection:
        # Read-only, so a deleted file is an error rather than a new empty database.
        uri = f"{self.path.absolute().as_uri()}?mode=ro"
        try:
            conn = sqlite3.connect(
                uri,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=True,
            )
        except sqlite3.Error as exc:
            raise self._unavailable("cannot open", exc) from exc
        return conn

    def _unavailable(self, action: str, exc: sqlite3.Error) -> StorageUnavailable:
        return StorageUnavailable(f"{action} SQLite database {self.path}: {exc}")
