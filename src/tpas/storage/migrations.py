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

__all__ = [
    "FRAME_TIME",
    "LATEST_VERSION",
    "MIGRATIONS",
    "TIME_LED_KEYS",
    "UNTIMED_FRAME_KINDS",
    "Migration",
    "apply_postgres",
    "apply_sqlite",
]


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

# The duplicate keys (QUALITY.md SEC-5) as of version 4. Each unique index leads with a
# time the key itself stands for, so that new reports land together at the end of it
# rather than on a random leaf each: a token signs its query, Time included (signed_at:
# that Time in epoch seconds, 0 when the query has none), and the frame key covers the
# body's Time, which is what "time" holds, except for the alarms: theirs falls back to
# CreationTime, which their frame key does not cover, so they are keyed by '' instead.
# Equal keys have equal times, so each index refuses exactly what the plain (application,
# token) and (application, frame_key) ones did; with random leaves every commit wrote
# about four pages per report to the write-ahead log, now one and a half. Rows stored
# before version 4 have no signed_at (NULL): their tokens stay unique through the partial
# index, which new rows never enter, and the stores look them up before inserting while
# such rows exist. The frame key's time is FRAME_TIME, which lookups must repeat as is.
UNTIMED_FRAME_KINDS: Final = ("device_alarm", "base_station_alarm")
"""The kinds whose frame time is '' (frozen with schema 4, like FRAME_TIME)."""
FRAME_TIME: Final = (
    f"CASE WHEN kind IN ({', '.join(repr(k) for k in UNTIMED_FRAME_KINDS)}) THEN '' "
    "ELSE COALESCE(\"time\", '') END"
)
_REPORT_KEYS: Final = (
    "CREATE UNIQUE INDEX reports_signed_token ON reports (application, signed_at, token)",
    "CREATE UNIQUE INDEX reports_legacy_token ON reports (application, token) "
    "WHERE signed_at IS NULL",
    f"CREATE UNIQUE INDEX reports_time_frame_key ON reports (application, ({FRAME_TIME}), "
    "frame_key)",
)

TIME_LED_KEYS: Final = 4
"""The schema version whose duplicate keys lead with a time (and reports have signed_at)."""

# The columns of reports as of version 3, in order.
_V3_COLUMNS: Final = (
    'id, application, kind, dev_eui, "time", time_ts, received_at, token, frame_key, body, '
    "content_type, fport, fcnt_up, fcnt_dn, payload_hex, rssi, snr, spreading_factor, lat, "
    "lon, correlation_id"
)

# The statuses of tpas.storage.ports.DownlinkStatus, frozen as of version 2: a migration
# never changes with the code that follows it.
_DOWNLINK_STATUSES: Final = (
    "'queued', 'submitted', 'sent', 'failed', 'rejected', 'expired', 'cancelled'"
)

# UNIQUE (application, idempotency_key) leaves rows without a key free: NULLs are distinct.
_DOWNLINK_INDEXES: Final = (
    # claim_due: the queued downlinks, by due time.
    "CREATE INDEX downlinks_status_next_attempt_at ON downlinks (status, next_attempt_at, id)",
    # claim_due's per-device order: is an older downlink of the device still queued? Only
    # queued rows, so it stays small however many finished downlinks pile up; claim_due
    # names the status as a literal, which lets both databases use it. (Without it SQLite
    # walks every older queued downlink for each candidate.)
    "CREATE INDEX downlinks_queued_device ON downlinks (application, dev_eui, id) "
    "WHERE status = 'queued'",
    # Delivery matching by DevEUI, and /api/downlinks?application=&dev_eui= (newest first).
    "CREATE INDEX downlinks_application_dev_eui_id ON downlinks (application, dev_eui, id)",
    # /api/downlinks?status= (newest first), and the outbox depth by status.
    "CREATE INDEX downlinks_status_id ON downlinks (status, id)",
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
    Migration(
        version=2,
        name="downlinks",
        sqlite=(
            # attempts and delivery are JSON text; confirmed and flush_queue 0 or 1.
            f"""
            CREATE TABLE downlinks (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                application TEXT NOT NULL,
                dev_eui TEXT NOT NULL,
                correlation_id TEXT NOT NULL UNIQUE,
                created_at REAL NOT NULL,
                status TEXT NOT NULL CHECK (status IN ({_DOWNLINK_STATUSES})),
                fport INTEGER,
                payload_hex TEXT,
                confirmed INTEGER NOT NULL DEFAULT 0,
                flush_queue INTEGER NOT NULL DEFAULT 0,
                validity_time TEXT,
                expires_at REAL,
                fcnt_dn INTEGER,
                idempotency_key TEXT,
                next_attempt_at REAL,
                submitted_at REAL,
                finished_at REAL,
                detail TEXT,
                attempts TEXT NOT NULL DEFAULT '[]',
                delivery TEXT,
                lease_until REAL,
                lease_owner TEXT,
                UNIQUE (application, idempotency_key)
            )
            """,
            *_DOWNLINK_INDEXES,
        ),
        postgres=(
            f"""
            CREATE TABLE downlinks (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                application TEXT NOT NULL,
                dev_eui TEXT NOT NULL,
                correlation_id TEXT NOT NULL UNIQUE,
                created_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL CHECK (status IN ({_DOWNLINK_STATUSES})),
                fport INTEGER,
                payload_hex TEXT,
                confirmed BOOLEAN NOT NULL DEFAULT FALSE,
                flush_queue BOOLEAN NOT NULL DEFAULT FALSE,
                validity_time TEXT,
                expires_at DOUBLE PRECISION,
                fcnt_dn BIGINT,
                idempotency_key TEXT,
                next_attempt_at DOUBLE PRECISION,
                submitted_at DOUBLE PRECISION,
                finished_at DOUBLE PRECISION,
                detail TEXT,
                attempts JSONB NOT NULL DEFAULT '[]',
                delivery JSONB,
                lease_until DOUBLE PRECISION,
                lease_owner TEXT,
                UNIQUE (application, idempotency_key)
            )
            """,
            *_DOWNLINK_INDEXES,
        ),
    ),
    Migration(
        version=3,
        name="leaner reports",
        # Each stored report cost two copies of itself (the body and the typed model as
        # JSON) and a leaf page in each of four randomly ordered indexes: every commit
        # wrote ~5 pages per report to the write-ahead log. The model is now decoded from
        # the body when read, and lookups by (application, DevEUI) use the DevEUI index
        # (a DevEUI rarely belongs to more than one application).
        sqlite=(
            "ALTER TABLE reports DROP COLUMN report_json",
            "DROP INDEX reports_application_dev_eui_id",
        ),
        postgres=(
            "ALTER TABLE reports DROP COLUMN report_json",
            "DROP INDEX reports_application_dev_eui_id",
        ),
    ),
    Migration(
        version=TIME_LED_KEYS,
        name="time-led duplicate keys",
        # SQLite cannot drop the indexes of a table's UNIQUE constraints: the table is
        # built again without them (its rows, ids and AUTOINCREMENT counter copied).
        sqlite=(
            """
            CREATE TABLE reports_v4 (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                application TEXT NOT NULL,
                kind TEXT NOT NULL,
                dev_eui TEXT,
                "time" TEXT,
                time_ts REAL NOT NULL,
                received_at REAL NOT NULL,
                token TEXT NOT NULL,
                frame_key TEXT NOT NULL,
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
                signed_at REAL
            )
            """,
            # S608: constant column names only.
            f"INSERT INTO reports_v4 ({_V3_COLUMNS}) SELECT {_V3_COLUMNS} FROM reports",  # noqa: S608
            "UPDATE sqlite_sequence SET seq = "
            "(SELECT seq FROM sqlite_sequence WHERE name = 'reports') WHERE name = 'reports_v4'",
            "DROP TABLE reports",
            "ALTER TABLE reports_v4 RENAME TO reports",
            "CREATE INDEX reports_dev_eui_id ON reports (dev_eui, id)",
            "CREATE INDEX reports_kind_id ON reports (kind, id)",
            "CREATE INDEX reports_time_ts ON reports (time_ts)",
            *_REPORT_KEYS,
        ),
        postgres=(
            "ALTER TABLE reports ADD COLUMN signed_at DOUBLE PRECISION",
            *_REPORT_KEYS,
            "ALTER TABLE reports DROP CONSTRAINT reports_application_token_key",
            "ALTER TABLE reports DROP CONSTRAINT reports_application_frame_key_key",
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
