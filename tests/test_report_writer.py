"""The report writer's group commit: how batches are formed and where they go.

Real stores throughout: a SQLite file, the in-memory store, a spool directory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tests.storage.conftest import minimal_report as report
from tpas.errors import StorageUnavailable
from tpas.services.metrics import Metrics
from tpas.services.writer import ReportWriter, WriteOutcome
from tpas.storage import MemoryStore, NewReport, SqliteStore, StoreOutcome
from tpas.storage.spool import FileSpool


class RecordingSqliteStore(SqliteStore):
    """A SQLite store that notes the size of every batch handed to it."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def submit_many(self, reports: Sequence[NewReport]) -> asyncio.Future[list[StoreOutcome]]:
        self.batches.append(len(reports))
        return super().submit_many(reports)


class RecordingMemoryStore(MemoryStore):
    """The in-memory store (no ``submit_many``), noting its batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def add_many(self, reports: Sequence[NewReport]) -> list[StoreOutcome]:
        self.batches.append(len(reports))
        return await super().add_many(reports)


async def add_all(writer: ReportWriter, reports: list[NewReport]) -> list[WriteOutcome]:
    writer.start()
    try:
        return await asyncio.gather(*(writer.add(r) for r in reports))
    finally:
        await writer.stop()


def test_an_idle_sqlite_writer_starts_on_the_first_report_at_once(tmp_path: Path) -> None:
    """With nothing being committed, the first report goes to the SQLite writer thread
    before the event loop runs the requests that arrived with it; those make the next
    batches. Every caller gets its own id, and a duplicate the id it duplicates."""
    store = RecordingSqliteStore(tmp_path / "tpas.db")
    reports = [report(n) for n in range(40)] + [report(7)]

    async def main() -> list[WriteOutcome]:
        await store.open()
        try:
            return await add_all(ReportWriter(store, None, Metrics()), reports)
        finally:
            await store.close()

    outcomes = asyncio.run(main())
    assert store.batches[0] == 1
    assert len(store.batches) >= 2
    assert sum(store.batches) == len(reports)
    ids = [o.id for o in outcomes[:40]]
    assert len(set(ids)) == 40
    assert not any(o.duplicate for o in outcomes[:40])
    assert outcomes[40] == WriteOutcome(ids[7], duplicate=True)


def test_a_store_without_submit_many_gets_whole_bursts() -> None:
    """A store that commits through ``add_many`` alone (here the in-memory one) gets the
    reports that arrived together as one batch, as before."""
    store = RecordingMemoryStore()
    reports = [report(n) for n in range(30)]

    async def main() -> list[WriteOutcome]:
        await store.open()
        try:
            return await add_all(ReportWriter(store, None, Metrics()), reports)
        finally:
            await store.close()

    outcomes = asyncio.run(main())
    assert store.batches == [30]
    assert [o.id for o in outcomes] == sorted(o.id for o in outcomes if o.id is not None)


def test_a_closed_store_sends_the_batch_to_the_spool(tmp_path: Path) -> None:
    """When the store refuses a batch at once (here a SQLite store that is not open), the
    batch is spooled and answered as such, and the writer turns to the spool."""
    spool = FileSpool(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    writer = ReportWriter(SqliteStore(tmp_path / "tpas.db"), spool, Metrics())
    outcomes = asyncio.run(add_all(writer, [report(1), report(2)]))
    assert all(o.spooled and o.id is None for o in outcomes)
    assert writer.degraded
    assert sorted(r.token for s in spool.segments() for r in spool.read(s)) == [
        "token-1",
        "token-2",
    ]


def test_a_closed_store_without_a_spool_fails_the_callers(tmp_path: Path) -> None:
    """Without a spool, a store that refuses the batch makes each caller's add raise."""
    writer = ReportWriter(SqliteStore(tmp_path / "tpas.db"), None, Metrics())

    async def main() -> tuple[WriteOutcome | BaseException]:
        writer.start()
        try:
            return await asyncio.gather(writer.add(report(1)), return_exceptions=True)
        finally:
            await writer.stop()

    (result,) = asyncio.run(main())
    assert isinstance(result, StorageUnavailable)
    assert "not open" in str(result)
