"""Schema migrations: ordered, recorded, and refusing a schema newer than the code."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from msgspec.structs import replace

from tpas.errors import StorageUnavailable
from tpas.storage import SqliteStore, migrations
from tpas.storage.migrations import LATEST_VERSION, MIGRATIONS
from tpas.storage.ports import NewReport, ReportQuery, Store, StoreOutcome
from tpas.storage.postgres import PostgresStore


def test_versions_count_up_from_one() -> None:
    """Migrations are numbered 1, 2, 3, ... in order, each with SQL for both databases."""
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == LATEST_VERSION
    assert len({m.name for m in MIGRATIONS}) == len(MIGRATIONS)
    assert all(m.sqlite and m.postgres for m in MIGRATIONS)


def test_sqlite_records_each_migration_once(tmp_path: Path) -> None:
    """Opening an SQLite file twice records every migration exactly once."""
    path = tmp_path / "tpas.db"

    async def open_and_close() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    asyncio.run(open_and_close())
    asyncio.run(open_and_close())
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version")
        assert rows.fetchall() == [(m.version, m.name) for m in MIGRATIONS]


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    """An SQLite file migrated by a newer tpas is refused with StorageUnavailable."""
    path = tmp_path / "tpas.db"

    async def open_and_close() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    asyncio.run(open_and_close())
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(StorageUnavailable, match="version 999, newer than this tpas"):
        asyncio.run(open_and_close())


def test_postgres_newer_schema_is_refused(pg_schema: str) -> None:
    """A PostgreSQL schema migrated by a newer tpas is refused with StorageUnavailable."""

    async def open_and_close() -> None:
        store = PostgresStore(pg_schema)
        await store.open()
        await store.close()

    asyncio.run(open_and_close())
    with psycopg.connect(pg_schema) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    with pytest.raises(StorageUnavailable, match="version 999, newer than this tpas"):
        asyncio.run(open_and_close())


_V3_INSERT = (
    'INSERT INTO reports (application, kind, dev_eui, "time", time_ts, received_at, token, '
    "frame_key, body, content_type) VALUES ({})"
)


def _v3_row(n: int) -> tuple[object, ...]:
    return (
        "farm",
        "uplink",
        "70B3D5E75E000001",
        f"2026-11-27T10:00:{n:02d}.000+00:00",
        1_795_000_000.0 + n,
        1_795_000_000.5 + n,
        f"token-{n}",
        f"frame-{n}",
        b"{}",
        "application/json",
    )


def _report(n: int, **changes: object) -> NewReport:
    return replace(
        NewReport(
            application="farm",
            kind="uplink",
            dev_eui="70B3D5E75E000001",
            time=f"2026-11-27T10:00:{n:02d}.000+00:00",
            time_ts=1_795_000_000.0 + n,
            received_at=1_795_000_000.5 + n,
            token=f"token-{n}",
            frame_key=f"frame-{n}",
            body=b"{}",
            content_type="application/json",
            signed_at=1_795_000_000.25 + n,
        ),
        **changes,
    )


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_reports_stored_before_time_led_keys_stay_duplicates(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Rows stored under schema 3 keep their ids and the id counter, and after the upgrade
    to time-led keys a report repeating one's token, or another's frame, is a duplicate:
    their tokens have no signed Time, and the stores look them up before inserting."""
    legacy = [_v3_row(n) for n in range(3)]
    if database == "sqlite":
        path = tmp_path / "tpas.db"
        make_store: Callable[[], Store] = lambda: SqliteStore(path)  # noqa: E731

        def insert_v3() -> None:
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.executemany(_V3_INSERT.format(", ".join("?" * 10)), legacy)
                # The counter past the last id, as after rows that were rolled back.
                conn.execute("UPDATE sqlite_sequence SET seq = 40 WHERE name = 'reports'")

    else:
        dsn: str = request.getfixturevalue("pg_schema")
        make_store = lambda: PostgresStore(dsn)  # noqa: E731

        def insert_v3() -> None:
            with psycopg.connect(dsn) as conn:
                conn.cursor().executemany(_V3_INSERT.format(", ".join(["%s"] * 10)), legacy)
                conn.execute("SELECT setval(pg_get_serial_sequence('reports', 'id'), 40)")

    async def nothing(store: Store) -> None:
        pass

    with monkeypatch.context() as old:
        old.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:3])
        old.setattr(migrations, "LATEST_VERSION", 3)
        asyncio.run(_with(make_store(), nothing))
    insert_v3()

    async def upgraded(store: Store) -> None:
        before = {r.token: r.id for r in await store.query(ReportQuery())}
        assert sorted(before) == ["token-0", "token-1", "token-2"]
        outcomes = await store.add_many(
            [
                _report(10, token="token-0"),  # a legacy token, with a signed Time now
                _report(11, frame_key="frame-1", time=legacy[1][3]),  # a legacy frame
                _report(12),
                _report(12, frame_key="frame-12b"),  # the same token twice, both new
            ]
        )
        assert outcomes[:2] == [
            StoreOutcome(before["token-0"], duplicate=True),
            StoreOutcome(before["token-1"], duplicate=True),
        ]
        assert not outcomes[2].duplicate
        assert outcomes[2].id > 40  # ids never reused
        assert outcomes[3] == StoreOutcome(outcomes[2].id, duplicate=True)
        # Again in a later batch: now a stored row with a signed Time.
        again = await store.add_many([_report(12, frame_key="frame-12c"), _report(13)])
        assert again[0] == StoreOutcome(outcomes[2].id, duplicate=True)
        assert not again[1].duplicate
        assert len(await store.query(ReportQuery())) == 5

    asyncio.run(_with(make_store(), upgraded))
    # A store opened afterwards still knows of the legacy rows.
    asyncio.run(
        _with(make_store(), lambda store: _expect_duplicate(store, _report(20, token="token-2")))
    )


async def _expect_duplicate(store: Store, report: NewReport) -> None:
    [outcome] = await store.add_many([report])
    assert outcome.duplicate


async def _with(store: Store, scenario: Callable[[Store], Awaitable[None]]) -> None:
    await store.open()
    try:
        await scenario(store)
    finally:
        await store.close()
