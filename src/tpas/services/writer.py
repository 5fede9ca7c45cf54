"""Group commit: one writer turns concurrent report requests into batched transactions.

Each request puts its report on a queue and awaits the outcome. A single loop takes
everything waiting (up to ``batch_max``) and commits it with one ``add_many``, so
concurrent requests share one fsync (QUALITY.md REL-1). A request is answered only after
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
from typing import Final

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
        # Reports waiting for the commit loop, and the loop's wake-up while it waits for
        # them: a plain list and one future, not an asyncio.Queue, because every request
        # passes here and a queue's put and get cost several Python calls each.
        self._pending: list[_Item] = []
        self._arrived: asyncio.Future[None] | None = None
        # The loop the writer runs on, kept: asking asyncio for it costs a system call.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Commits given up on after commit_timeout; kept referenced until they end.
        self._abandoned: set[asyncio.Task[list[StoreOutcome]]] = set()
        self._degraded = False
        self._replay_lock = asyncio.Lock()
        self.max_inflight = max_inflight
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def degraded(self) -> bool:
        """True while the store is failing and reports go to the spool."""
        return self._degraded

    def start(self) -> None:
        """Start the commit loop and the spool replay loop."""
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="tpas-commit"),
            asyncio.create_task(self._replay_loop(), name="tpas-replay"),
        ]

    async def stop(self) -> None:
        """Commit whatever is queued, then stop the loops."""
        while self._pending:
            await asyncio.sleep(0.005)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        # Abandoned commits have their batches in the spool already.
        tasks = [*self._tasks, *self._abandoned]
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
        future: asyncio.Future[WriteOutcome] = (
            self._loop or asyncio.get_running_loop()
        ).create_future()
        self._pending.append((report, future))
        arrived = self._arrived
        if arrived is not None and not arrived.done():
            arrived.set_result(None)
        return await future

    async def _commit_loop(self) -> None:
        # Up to ``max_inflight`` batches are handed to the store at once: while one
        # commits, the next already waits there (SQLite's writer merges waiting batches
        # into its next transaction; PostgreSQL commits them on separate connections),
        # so the fsync, not the hand-over between batches, sets the pace.
        # A batch is taken once a slot is free, so reports that arrive while every slot is
        # busy make one larger batch rather than several small ones.
        slots = asyncio.Semaphore(self.max_inflight)
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()
            while not self._pending:
                self._arrived = loop.create_future()
                try:
                    await self._arrived
                finally:
                    self._arrived = None
            batch = self._pending[: self.batch_max]
            del self._pending[: self.batch_max]
            task = asyncio.create_task(self._guarded_commit(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(lambda _: slots.release())

    async def _guarded_commit(self, batch: list[_Item]) -> None:
        try:
            await self._commit(batch)
        except Exception as exc:
            # A bug must not stop the writer: every later request would wait forever.
            log.exception("commit failed unexpectedly")
            _fail(batch, StorageUnavailable(f"commit failed: {exc!r}"))

    async def _commit(self, batch: list[_Item]) -> None:
        reports = [report for report, _ in batch]
        self.metrics.commit_batch.observe(len(batch))
        started = time.perf_counter()
        if not self._degraded:
            try:
                outcomes = await self._add_within_timeout(reports)
            except StorageUnavailable as exc:
                log.warning("storage unavailable, spooling: %s", exc)
                self._degraded = self.spool is not None
                if self.spool is None:
                    _fail(batch, exc)
                    return
            else:
                self.metrics.commit_latency.observe(time.perf_counter() - started)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(WriteOutcome(outcome.id, outcome.duplicate))
                return
        await self._spool(batch)

    async def _add_within_timeout(self, reports: list[NewReport]) -> list[StoreOutcome]:
        commit = asyncio.ensure_future(self.store.add_many(reports))
        # asyncio.wait, not wait_for: cancelling a commit on a hung server could itself
        # hang (the driver tries to cancel the query, then to roll back).
        done, _ = await asyncio.wait({commit}, timeout=self.commit_timeout)
        if done:
            return commit.result()
        self._abandoned.add(commit)
        commit.add_done_callback(self._forget)
        raise StorageUnavailable(f"the store did not commit within {self.commit_timeout} s")

    def _forget(self, commit: asyncio.Task[list[StoreOutcome]]) -> None:
        self._abandoned.discard(commit)
        if not commit.cancelled() and commit.exception() is not None:
            log.info("an abandoned commit failed: %s", commit.exception())

    async def _spool(self, batch: list[_Item]) -> None:
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
        for segment in taken:
            await asyncio.to_thread(spool.remove, segment)
        self.metrics.replayed.inc(amount=len(reports))
        return len(reports)


def _fail(batch: list[_Item], exc: StorageUnavailable) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
