"""Schema migrations: ordered, recorded, and refusing a schema newer than the code."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from tpas.errors import StorageUnavailable
from tpas.storage import SqliteStore
from tpas.storage.migrations import LATEST_VERSION, MIGRATIONS
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
