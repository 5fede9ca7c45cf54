"""Versioned schema migrations for SQLite and PostgreSQL.

Each :class:`Migration` is applied once, in version order, inside the same transaction
that records it in ``schema_version``, so a crash leaves either all of it or none.
Applying is idempotent, and safe with several processes starting at once: SQLite
serialises them with ``BEGIN IMMEDIATE``, PostgreSQL with a transaction-scoped advisory
lock. Never edit a released migration; append a new one.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tpas.errors import StorageUnavailable

if TYPE_CHECKING:  # psycopg takes ~0.2 s to import; SQLite-only processes never need it
    import psycopg

__all__ = ["MIGRATIONS", "Migration", "apply_postgres", "apply_sqlite"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: statements for each dialect, run in order."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_REPORT_INDEXES: Final = (
    # /api/messages?application=&dev_eui= (newest first), and a device's latest radio data.
    "CREATE INDEX reports_application_dev_eui_id ON reports (application, dev_eui, id)",
    # /api/messages?dev_eui= across applications.
    "CREATE INDEX reports_dev_eui_id ON reports (dev_eui, id)",
    "CREATE INDEX reports_kind_id ON reports (kind, id)",
    "CREATE INDEX reports_time_ts ON reports (time_ts)",
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        version=1,
        name="reports",
        sqlite=(
            # AUTOINCREMENT: ids never reused, so they grow with insertion order (cursors).
            """
            CREATE TABLE reports (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                application TEXT NOT NULL,
                kind TEXT NOT NULL,
                dev_eui TEXT,
                "time" TEXT,
                time_ts REAL NOT NULL,
                received_at REAL NOT NULL,
                token TEXT NOT NULL,
                frame_key TEXT NOT NULL,
                report_json BLOB NOT NULL,
                body BLOB NOT NULL,
                content_type TEXT NOT NULL,
                fport INTEGER,
                fcnt_up INTEGER,
                fcnt_dn INTEGER,
                payload_hex TEXT,
                rssi REAL,
                snr REAL,
                spreading_factor INTEGER,
                lat REAL,
                lon REAL,
                correlation_id TEXT,
                UNIQUE (application, token),
                UNIQUE (application, frame_key)
            )
            """,
            *_REPORT_INDEXES,
        ),
        postgres=(
            # BYTEA for both JSON and body: they must come back byte for byte (SEC-3).
            # BIGINT frame counters: FCntUp/FCntDn are 32-bit unsigned.
            """
            CREATE TABLE reports (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                application TEXT NOT NULL,
                kind TEXT NOT NULL,
                dev_eui TEXT,
                "time" TEXT,
                time_ts DOUBLE PRECISION NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                token TEXT NOT NULL,
                frame_key TEXT NOT NULL,
                report_json BYTEA NOT NULL,
                body BYTEA NOT NULL,
                content_type TEXT NOT NULL,
                fport INTEGER,
                fcnt_up BIGINT,
                fcnt_dn BIGINT,
                payload_hex TEXT,
                rssi DOUBLE PRECISION,
                snr DOUBLE PRECISION,
                spreading_factor INTEGER,
                lat DOUBLE PRECISION,
                lon DOUBLE PRECISION,
                correlation_id TEXT,
                UNIQUE (application, token),
                UNIQUE (application, frame_key)
            )
            """,
            *_REPORT_INDEXES,
        ),
    ),
)

LATEST_VERSION: Final = MIGRATIONS[-1].version

# "tpas.schema" as a number: every tpas process on a database queues on this lock.
_PG_LOCK_KEY: Final = 0x7470_6173_2E73_6368

_SQLITE_VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
    )
"""
_PG_VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
"""


def _pending(current: int) -> tuple[Migration, ...]:
    if current > LATEST_VERSION:
        # Running older code on a newer schema could write rows the new code cannot read.
        raise StorageUnavailable(
            f"the database schema is at version {current}, newer than this tpas "
            f"(which knows up to version {LATEST_VERSION}); upgrade tpas"
        )
    return tuple(m for m in MIGRATIONS if m.version > current)


def apply_sqlite(conn: sqlite3.Connection) -> int:
    """Bring an SQLite database (a connection in autocommit mode) up to date.

    Returns the schema version. Driver errors propagate unchanged; the caller converts them.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_SQLITE_VERSION_TABLE)
        (current,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        for migration in _pending(current):
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)",
                (migration.version, migration.name),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION


async def apply_postgres(conn: psycopg.AsyncConnection[Any]) -> int:
    """Bring a PostgreSQL schema (the first of the search path) up to date.

    Returns the schema version. Driver errors propagate unchanged; the caller converts them.
    """
    async with conn.transaction():
        # Without the lock, two processes could both see version 0 and both create tables.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_KEY,))
        await conn.execute(_PG_VERSION_TABLE)
        cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        row = await cursor.fetchone()
        assert row is not None  # an aggregate always returns one row
        for migration in _pending(int(row[0])):
            for statement in migration.postgres:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    return LATEST_VERSION
