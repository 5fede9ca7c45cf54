"""Group commit: one writer turns concurrent report requests into batched transactions.

Each request puts its report on a pending list and awaits the outcome. At the start of the
next iteration of the event loop, everything waiting (up to ``batch_max``) goes to the
store as one batch, so concurrent requests share one fsync (QUALITY.md REL-1). Up to
``max_inflight`` batches are in the store at once; reports that arrive while every slot is
taken wait, and the first slot freed takes them all. No task is created per batch: the
SQLite store takes a batch at once (``submit_many``) and reports its outcome in a
callback, each hop through the event loop saved being a loop iteration (often a
millisecond under load) that a request no longer waits. A request is answered only after
its batch is committed, or, when the store cannot commit, after the batch is fsync'd to
the local spool (REL-4); while the store is down, batches go straight to the spool and a
replay loop moves them into the store once it answers again.

A store that neither commits nor fails within ``commit_timeout`` (a hung server, or a pool
still waiting for a connection to a server that refuses them) counts as down: the batch is
spooled, so no request waits much longer than that (REL-6). The abandoned commit may still
succeed later; replaying the spooled copy then finds the rows and counts them as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from tpas.errors import StorageUnavailable
from tpas.services.metrics import Metrics
from tpas.storage.ports import NewReport, ReportStore, Spool, StoreOutcome

__all__ = ["ReportWriter", "WriteOutcome"]

log = logging.getLogger("tpas.writer")

_REPLAY_INTERVAL: Final = 1.0
_COMMIT_TIMEOUT: Final = 2.0


class WriteOutcome(msgspec.Struct, frozen=True, gc=False):
    """What became of one report: stored (with its id), a duplicate, or spooled."""

    id: int | None
    duplicate: bool = False
    spooled: bool = False


_Item = tuple[NewReport, "asyncio.Future[WriteOutcome]"]


Commit = Callable[[list[NewReport], Callable[..., None]], None]
"""A store's ``submit_many``: queue a batch now, be told its outcome later."""


class ReportWriter:
    """Batches :meth:`add` calls into store commits; falls back to the spool."""

    def __init__(
        self,
        store: ReportStore,
        spool: Spool | None,
        metrics: Metrics,
        *,
        batch_max: int = 512,
        replay_interval: float = _REPLAY_INTERVAL,
        commit_timeout: float = _COMMIT_TIMEOUT,
        max_inflight: int = 4,
    ) -> None:
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.batch_max = batch_max
        self.replay_interval = replay_interval
        self.commit_timeout = commit_timeout
        self.max_inflight = max_inflight
        # Reports waiting for a batch: a plain list, not an asyncio.Queue, because every
        # request passes here and a queue's put and get cost several Python calls each.
        self._pending: list[_Item] = []
        self._flush_due = False
        self._flushing = False
        self._busy = 0
        """Batches handed over and not settled yet (at most ``max_inflight``)."""
        # The loop the writer runs on, kept: asking asyncio for it costs a system call.
        self._loop: asyncio.AbstractEventLoop | None = None
        # A store that queues a batch without a task of its own (the SQLite writer thread).
        self._submit: Commit | None = getattr(store, "submit_many", None)
        self._tasks: list[asyncio.Task[None]] = []
        # Spooling batches, and commits given up on after commit_timeout (kept referenced
        # until they end).
        self._spooling: set[asyncio.Task[None]] = set()
        self._abandoned: set[asyncio.Future[list[StoreOutcome]]] = set()
        self._degraded = False
        self._replay_lock = asyncio.Lock()

    @property
    def degraded(self) -> bool:
        """True while the store is failing and reports go to the spool."""
        return self._degraded

    def start(self) -> None:
        """Start the spool replay loop."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._replay_loop(), name="tpas-replay")]

    async def stop(self) -> None:
        """Commit whatever is queued, then stop the loops."""
        while self._pending or self._busy:
            await asyncio.sleep(0.005)
        # Abandoned commits have their batches in the spool already.
        tasks: list[asyncio.Future[Any]] = [*self._tasks, *self._abandoned]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, StorageUnavailable):
                await task
        self._tasks = []

    async def add(self, report: NewReport) -> WriteOutcome:
        """Queue one report and wait until it is committed or spooled.

        Raises :class:`StorageUnavailable` when neither the store nor the spool took it.
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[WriteOutcome] = loop.create_future()
        self._pending.append((report, future))
        if not self._flush_due:
            # Every report that arrives in this iteration of the event loop joins the
            # batch taken at the start of the next one.
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Hand the waiting reports over as batches while fewer than ``max_inflight`` are
        being committed.

        Several batches in flight keep the store busy: while one commits, the next waits
        there already (SQLite's writer thread merges the waiting ones into its next
        transaction; PostgreSQL commits them on separate connections), so the fsync, not
        the hand-over, sets the pace. Reports that arrive while every slot is taken wait
        here, and the first slot freed takes them all as one batch. The hand-over costs no
        task and no extra loop iteration: a store with ``submit_many`` (SQLite) has the
        batch at once and tells its outcome in a callback.
        """
        self._flush_due = False
        self._flushing = True
        try:
            while self._pending and self._busy < self.max_inflight:
                batch = self._pending[: self.batch_max]
                del self._pending[: self.batch_max]
                self._busy += 1
                self.metrics.commit_batch.observe(len(batch))
                if self._degraded:
                    self._spool_later(batch)
                else:
                    _Batch(self, batch).begin()
        finally:
            self._flushing = False

    def _release(self) -> None:
        """A batch is settled: its slot takes whatever waits."""
        self._busy -= 1
        if self._pending and not self._flush_due and not self._flushing:
            self._flush()

    def _store_failed(self, batch: list[_Item], error: StorageUnavailable) -> None:
        """The store could not take ``batch``: spool it (and what follows), or fail it."""
        log.warning("storage unavailable, spooling: %s", error)
        if self.spool is None:
            _fail(batch, error)
            self._release()
            return
        self._degraded = True
        self._spool_later(batch)

    def _spool_later(self, batch: list[_Item]) -> None:
        task = asyncio.create_task(self._spool(batch))
        self._spooling.add(task)
        task.add_done_callback(self._spooled)

    def _spooled(self, task: asyncio.Task[None]) -> None:
        self._spooling.discard(task)
        self._release()

    def _forget(self, commit: asyncio.Future[list[StoreOutcome]]) -> None:
        self._abandoned.discard(commit)
        if not commit.cancelled() and commit.exception() is not None:
            log.info("an abandoned commit failed: %s", commit.exception())

    async def _spool(self, batch: list[_Item]) -> None:
        try:
            spool = self.spool
            assert spool is not None
            try:
                await asyncio.to_thread(spool.append, [report for report, _ in batch])
            except StorageUnavailable as exc:
                log.error("spool unavailable too: %s", exc)
                _fail(batch, exc)
                return
            self.metrics.spooled.inc(amount=len(batch))
            for _, future in batch:
                if not future.done():
                    future.set_result(WriteOutcome(None, spooled=True))
        except Exception as exc:
            # A bug must not leave requests waiting forever.
            log.exception("spooling failed unexpectedly")
            _fail(batch, StorageUnavailable(f"spooling failed: {exc!r}"))

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval)
            try:
                await self.replay()
            except StorageUnavailable as exc:
                log.info("spool replay waits for storage: %s", exc)
            except Exception:
                # Keep trying: a dead loop would leave the writer degraded for good.
                log.exception("spool replay failed")

    async def replay(self) -> int:
        """Once the store answers, leave degraded mode and move every spooled report into
        the store; return how many were committed.

        Idempotent: a report already stored is counted as a duplicate by the store.
        """
        spool = self.spool
        if spool is None:
            return 0
        async with self._replay_lock:
            if self._degraded:
                await self.store.ping()
                # New batches go to the store again; the backlog drains below, so the
                # spool stops growing and the loop ends.
                self._degraded = False
                log.info("storage answers again")
            moved = 0
            while segments := await asyncio.to_thread(spool.segments):
                moved += await self._replay_some(spool, segments)
            if moved:
                log.info("replayed %d spooled reports", moved)
            return moved

    async def _replay_some(self, spool: Spool, segments: list[str]) -> int:
        # Several segments per transaction: a long outage leaves one segment per batch.
        taken: list[str] = []
        reports: list[NewReport] = []
        for segment in segments:
            taken.append(segment)
            reports += await asyncio.to_thread(spool.read, segment)
            if len(reports) >= self.batch_max:
                break
        await self.store.add_many(reports)
        # Counted once committed, before the segments go: whoever sees the spool empty
        # sees these counted.
        self.metrics.replayed.inc(amount=len(reports))
        for segment in taken:
            await asyncio.to_thread(spool.remove, segment)
        return len(reports)


def _fail(batch: list[_Item], exc: StorageUnavailable) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


class _Batch:
    """One batch on its way into the store: its commit, its deadline, its answers."""

    __slots__ = ("_commit", "_items", "_settled", "_started", "_timer", "_writer")

    def __init__(self, writer: ReportWriter, items: list[_Item]) -> None:
        self._writer = writer
        self._items = items
        self._settled = False
        self._started = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._commit: asyncio.Future[list[StoreOutcome]] | None = None

    def begin(self) -> None:
        writer = self._writer
        loop = writer._loop or asyncio.get_running_loop()
        reports = [report for report, _ in self._items]
        self._started = time.perf_counter()
        # A store that neither commits nor fails within commit_timeout counts as down.
        self._timer = loop.call_later(writer.commit_timeout, self._expire)
        if writer._submit is not None:
            try:
                writer._submit(reports, self._outcome)
            except StorageUnavailable as exc:
                self._outcome(None, exc)
            return
        self._commit = asyncio.ensure_future(writer.store.add_many(reports))
        self._commit.add_done_callback(self._committed)

    def _committed(self, commit: asyncio.Future[list[StoreOutcome]]) -> None:
        if commit.cancelled():
            self._outcome(None, StorageUnavailable("the commit was cancelled"))
        elif (error := commit.exception()) is not None:
            self._outcome(None, error)
        else:
            self._outcome(commit.result(), None)

    def _outcome(self, outcomes: list[StoreOutcome] | None, error: BaseException | None) -> None:
        if self._settled:  # given up on already: the batch is in the spool
            if error is not None and self._commit is None:  # (else _forget tells)
                log.info("an abandoned commit failed: %s", error)
            return
        self._settled = True
        if self._timer is not None:
            self._timer.cancel()
        writer = self._writer
        if isinstance(error, StorageUnavailable):
            writer._store_failed(self._items, error)
            return
        try:
            if error is not None:
                # A bug, not an outage: fail this batch alone, and keep the writer going.
                log.error("commit failed unexpectedly", exc_info=error)
                _fail(self._items, StorageUnavailable(f"commit failed: {error!r}"))
            else:
                assert outcomes is not None
                writer.metrics.commit_latency.observe(time.perf_counter() - self._started)
                for (_, future), outcome in zip(self._items, outcomes, strict=True):
                    if not future.done():
                        future.set_result(WriteOutcome(outcome.id, outcome.duplicate))
        except Exception as exc:
            # A bug must not stop the writer: every later request would wait forever.
            log.exception("settling a commit failed unexpectedly")
            _fail(self._items, StorageUnavailable(f"commit failed: {exc!r}"))
        writer._release()

    def _expire(self) -> None:
        if self._settled:
            return
        self._settled = True
        writer = self._writer
        if self._commit is not None:
            # asyncio.wait's way, not wait_for's: cancelling a commit on a hung server
            # could itself hang (the driver tries to cancel the query, then to roll back).
            writer._abandoned.add(self._commit)
            self._commit.add_done_callback(writer._forget)
        error = StorageUnavailable(f"the store did not commit within {writer.commit_timeout} s")
        writer._store_failed(self._items, error)
