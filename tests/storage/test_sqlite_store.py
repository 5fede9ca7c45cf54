"""SqliteStore beyond the contract: durability settings, lock contention, failure modes."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tpas.errors import StorageUnavailable
from tpas.storage import NewReport, ReportQuery, SqliteStore


def new_report(n: int) -> NewReport:
    """A minimal report number ``n``."""
    return NewReport(
        application="farm",
        kind="uplink",
        dev_eui="70B3D5E75E000001",
        time=None,
        time_ts=float(n),
        received_at=float(n),
        token=f"token-{n}",
        frame_key=f"frame-{n}",
        body=b"{}",
        content_type="application/json",
    )


def test_missing_directory_is_storage_unavailable(tmp_path: Path) -> None:
    """A database in a directory that does not exist fails to open, naming the path."""
    path = tmp_path / "nowhere" / "tpas.db"
    with pytest.raises(StorageUnavailable, match="does not exist") as caught:
        asyncio.run(SqliteStore(path).open())
    assert str(path) in str(caught.value)
    assert not path.parent.exists()


def test_file_that_is_not_a_database_is_storage_unavailable(tmp_path: Path) -> None:
    """A file that is not SQLite fails to open with StorageUnavailable; no thread is left."""
    path = tmp_path / "tpas.db"
    path.write_bytes(b"this is not a database, just some text" * 100)
    threads = threading.active_count()
    with pytest.raises(StorageUnavailable, match="not a database") as caught:
        asyncio.run(SqliteStore(path).open())
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    assert threading.active_count() == threads


def test_writer_uses_wal_and_full_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer sets WAL and synchronous=FULL before it writes, and a batch of reports is
    one INSERT that is its own transaction: committed (visible to another connection) by
    the time add_many returns, with no BEGIN/COMMIT around it."""
    statements: list[str] = []
    real_connect: Callable[..., sqlite3.Connection] = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    path = tmp_path / "tpas.db"

    async def main() -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            await store.add_many([new_report(1), new_report(2)])
            with closing(real_connect(path)) as other:
                assert other.execute("SELECT token FROM reports ORDER BY id").fetchall() == [
                    ("token-1",),
                    ("token-2",),
                ]
        finally:
            await store.close()

    asyncio.run(main())
    sync_at = statements.index("PRAGMA synchronous = FULL")
    assert statements.index("PRAGMA journal_mode = WAL") < sync_at
    writes = [s for s in statements[sync_at:] if not s.startswith(("PRAGMA", "SELECT"))]
    # Migrations run in transactions of their own; the batch comes last, alone.
    assert writes[-1].startswith("INSERT INTO reports")
    assert writes[-2] == "COMMIT"
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_lock_held_too_long_is_storage_unavailable_then_recovers(tmp_path: Path) -> None:
    """A write blocked past busy_timeout fails cleanly; reads go on; the next write works."""
    path = tmp_path / "tpas.db"

    async def main() -> None:
        store = SqliteStore(path, busy_timeout=0.2)
        await store.open()
        try:
            [first] = await store.add_many([new_report(1)])
            blocker = sqlite3.connect(path, isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="locked") as caught:
                    await store.add_many([new_report(2)])
                assert time.monotonic() - started < 2
                assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
                # WAL: readers are not blocked by a writer.
                assert [r.id for r in await store.query(ReportQuery())] == [first.id]
                blocker.execute("ROLLBACK")
            finally:
                blocker.close()
            [second] = await store.add_many([new_report(2)])
            assert not second.duplicate
            assert [r.token for r in await store.query(ReportQuery())] == ["token-2", "token-1"]
        finally:
            await store.close()

    asyncio.run(main())
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_close_commits_queued_batches(tmp_path: Path) -> None:
    """Batches queued before ``close`` are committed before it returns."""
    path = tmp_path / "tpas.db"

    async def write() -> None:
        store = SqliteStore(path)
        await store.open()
        tasks = [asyncio.create_task(store.add_many([new_report(n)])) for n in range(50)]
        await asyncio.sleep(0)  # every task has queued its batch
        await store.close()
        outcomes = [outcome for [outcome] in await asyncio.gather(*tasks)]
        assert not any(outcome.duplicate for outcome in outcomes)

    async def count() -> int:
        store = SqliteStore(path)
        await store.open()
        try:
            return len(await store.query(ReportQuery(limit=1000)))
        finally:
            await store.close()

    asyncio.run(write())
    assert asyncio.run(count()) == 50


def test_repr_names_the_file(tmp_path: Path) -> None:
    """The store's repr names its database file."""
    assert repr(SqliteStore(tmp_path / "x.db")) == f"SqliteStore({str(tmp_path / 'x.db')!r})"


def test_concurrent_batches_share_one_statement_and_get_their_own_ids(tmp_path: Path) -> None:
    """Batches waiting for the writer together may be stored by one statement; each caller
    still gets the ids of its own reports, in order, and a duplicate (of a stored report, or
    of a report in another waiting batch) is answered with the id it duplicates."""

    async def main() -> None:
        store = SqliteStore(tmp_path / "tpas.db")
        await store.open()
        try:
            (first,) = await store.add_many([new_report(0)])
            batches = [[new_report(n) for n in range(1 + 10 * b, 11 + 10 * b)] for b in range(6)]
            batches[3][4] = new_report(0)  # stored before
            batches[5][0] = new_report(12)  # in batch 1
            results = await asyncio.gather(*(store.add_many(batch) for batch in batches))
            stored = {r.token: r.id for r in await store.query(ReportQuery(limit=1000))}
        finally:
            await store.close()
        assert len(stored) == 1 + 6 * 10 - 2
        for batch, outcomes in zip(batches, results, strict=True):
            assert [o.id for o in outcomes] == [stored[r.token] for r in batch]
        assert results[3][4].duplicate
        assert results[3][4].id == first.id
        assert results[5][0].duplicate
        assert not results[1][1].duplicate
        assert sum(o.duplicate for outcomes in results for o in outcomes) == 2

    asyncio.run(main())


def test_a_batch_larger_than_one_statement_is_one_transaction(tmp_path: Path) -> None:
    """A batch over one statement's worth of reports (a spool replay) is stored whole, in
    order, in one transaction."""

    async def main() -> None:
        store = SqliteStore(tmp_path / "tpas.db")
        await store.open()
        try:
            batch = [new_report(n) for n in range(250)]
            outcomes = await store.add_many(batch)
        finally:
            await store.close()
        ids = [o.id for o in outcomes]
        assert ids == list(range(ids[0], ids[0] + 250))
        assert not any(o.duplicate for o in outcomes)

    asyncio.run(main())
