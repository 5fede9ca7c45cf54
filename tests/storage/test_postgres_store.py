"""PostgresStore beyond the contract: unreachable servers, lost connections, a restart.

The restart test runs a private PostgreSQL (initdb in a temporary directory, its own port)
and never touches the machine's shared server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.pg import PrivateServer, private_server
from tpas.errors import StorageUnavailable
from tpas.storage import NewReport, ReportQuery, postgres
from tpas.storage.migrations import MIGRATIONS
from tpas.storage.postgres import PostgresStore
from tpas.storage.sql import INSERT_CHUNK, Statements, insert_params, numbered_insert_rows

INSERT = Statements("%s").insert


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


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_closed_port_is_storage_unavailable_quickly() -> None:
    """Opening a store on a port nobody listens on fails fast, without the password."""
    store = PostgresStore(
        f"postgresql://tpas:hunter2@127.0.0.1:{free_port()}/tpas", connect_timeout=2
    )
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        asyncio.run(store.open())
    assert time.monotonic() - started < 3
    assert "127.0.0.1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)


def test_migrations_are_recorded_once(pg_schema: str) -> None:
    """Opening a schema twice applies each migration once."""

    async def main() -> None:
        for _ in range(2):
            store = PostgresStore(pg_schema)
            await store.open()
            await store.close()

    asyncio.run(main())
    with psycopg.connect(pg_schema) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    assert rows == [(m.version, m.name) for m in MIGRATIONS]


def test_killed_connections_are_replaced(pg_schema: str) -> None:
    """After the server drops every pooled connection, the next calls still succeed."""
    name = unique_name()
    dsn = tuned(pg_schema, name)

    async def main() -> None:
        store = PostgresStore(dsn, min_size=3)
        await store.open()
        try:
            await store.add_many([new_report(1)])
            async with await psycopg.AsyncConnection.connect(pg_schema) as admin:
                cursor = await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                )
                assert len(await cursor.fetchall()) >= 3
            await store.ping()
            [outcome] = await store.add_many([new_report(2)])
            assert not outcome.duplicate
            assert len(await store.query(ReportQuery())) == 2
        finally:
            await store.close()

    asyncio.run(main())


def tuned(dsn: str, application_name: str, **settings: str) -> str:
    """``dsn`` with an application name and extra server settings (``-c name=value``)."""
    options = str(conninfo_to_dict(dsn).get("options") or "")
    options += "".join(f" -c {name}={value}" for name, value in settings.items())
    return make_conninfo(dsn, application_name=application_name, options=options.strip())


def unique_name() -> str:
    """An application name no other connection uses."""
    return f"tpas-test-{os.getpid()}-{time.monotonic_ns()}"


async def until_waiting_on_a_lock(conn: psycopg.AsyncConnection[Any], name: str) -> None:
    """Return once the connection named ``name`` waits on a row lock."""
    for _ in range(500):
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = %s AND wait_event_type = 'Lock'",
            (name,),
        )
        if await cursor.fetchone() == (1,):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never waited on a lock")


def test_ping_times_out_when_no_connection_is_free(pg_schema: str) -> None:
    """``ping`` gives up after its timeout when the pool has no connection to lend."""
    name = unique_name()
    report = new_report(1)

    async def main() -> None:
        store = PostgresStore(tuned(pg_schema, name), min_size=1, max_size=1, ping_timeout=0.2)
        await store.open()
        try:
            async with await psycopg.AsyncConnection.connect(pg_schema) as other:
                await other.execute(INSERT, insert_params(report))
                # The store's only connection now waits for the other's uncommitted row.
                task = asyncio.create_task(store.add_many([report]))
                await until_waiting_on_a_lock(other, name)
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match=r"did not answer|connection"):
                    await store.ping()
                assert time.monotonic() - started < 1
                await other.rollback()
            [outcome] = await task
            assert not outcome.duplicate
            await store.ping()
        finally:
            await store.close()

    asyncio.run(main())


def test_synchronous_commit_stays_on(pg_schema: str) -> None:
    """Connections run with synchronous_commit on even when the DSN turns it off (REL-1)."""

    async def main() -> None:
        store = PostgresStore(tuned(pg_schema, unique_name(), synchronous_commit="off"))
        await store.open()
        try:
            # No public way to see a pooled connection's settings: borrow one.
            async with store._connection("inspect") as conn:
                cursor = await conn.execute("SHOW synchronous_commit")
                assert await cursor.fetchone() == ("on",)
        finally:
            await store.close()

    asyncio.run(main())


def test_deadlock_with_another_writer_is_retried(pg_schema: str) -> None:
    """A batch aborted by a deadlock with another writer runs again and finds its rows."""
    with psycopg.connect(pg_schema) as conn:
        if conn.execute("SHOW is_superuser").fetchone() != ("on",):
            pytest.skip("setting deadlock_timeout needs a superuser")
    name = unique_name()
    # The store's backend checks for deadlocks first (the other waits 10 s before checking),
    # so the store's transaction is the one PostgreSQL aborts.
    dsn = tuned(pg_schema, name, deadlock_timeout="300ms")
    a, b = new_report(1), new_report(2)

    async def main() -> None:
        store = PostgresStore(dsn)
        await store.open()
        try:
            async with await psycopg.AsyncConnection.connect(pg_schema) as other:
                await other.execute("SET deadlock_timeout = '10s'")
                [(b_id,)] = await (await other.execute(INSERT, insert_params(b))).fetchall()
                task = asyncio.create_task(store.add_many([a, b]))  # holds a, waits for b
                await until_waiting_on_a_lock(other, name)
                [(a_id,)] = await (await other.execute(INSERT, insert_params(a))).fetchall()
                await other.commit()
            outcomes = await task
            assert [(o.id, o.duplicate) for o in outcomes] == [(a_id, True), (b_id, True)]
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def private_postgres(pg_dsn: str) -> Iterator[PrivateServer]:
    """A private, running PostgreSQL server; skipped where PostgreSQL is not installed."""
    with private_server() as server:
        yield server


def test_store_survives_a_server_restart(private_postgres: PrivateServer) -> None:
    """While the server is down calls fail fast with StorageUnavailable; then they work again."""

    async def main() -> None:
        store = PostgresStore(
            private_postgres.dsn, min_size=2, timeout=1.0, connect_timeout=2, ping_timeout=0.5
        )
        await store.open()
        try:
            [first] = await store.add_many([new_report(1)])
            private_postgres.stop()
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await store.add_many([new_report(2)])
            with pytest.raises(StorageUnavailable):
                await store.ping()
            assert time.monotonic() - started < 3
            private_postgres.start()
            deadline = time.monotonic() + 20
            while True:  # the pool reconnects with backoff; callers retry (the spool does)
                try:
                    [second] = await store.add_many([new_report(2)])
                    break
                except StorageUnavailable:
                    assert time.monotonic() < deadline, "the pool never reconnected"
                    await asyncio.sleep(0.2)
            assert not second.duplicate
            assert second.id > first.id
            await store.ping()
        finally:
            await store.close()

    asyncio.run(main())


def keyed_report(n: int, *, token: int, frame: int) -> NewReport:
    """Report ``n`` with the token of report ``token`` and the frame key of report ``frame``."""
    report = new_report(n)
    return NewReport(
        application=report.application,
        kind=report.kind,
        dev_eui=report.dev_eui,
        time=report.time,
        time_ts=report.time_ts,
        received_at=report.received_at,
        token=f"token-{token}",
        frame_key=f"frame-{frame}",
        body=report.body,
        content_type=report.content_type,
    )


@pytest.mark.parametrize("rows", [1, 2, INSERT_CHUNK])
def test_numbered_insert_is_the_multi_row_insert(rows: int) -> None:
    """The ``$n`` statement is the ``%s`` one with its placeholders numbered in order."""
    number = itertools.count(1)
    expected = re.sub("%s", lambda _: f"${next(number)}", Statements("%s").insert_rows(rows))
    assert numbered_insert_rows(rows) == expected
    assert numbered_insert_rows(rows) is numbered_insert_rows(rows)


def test_batch_of_several_inserts_maps_ids_and_duplicates(pg_schema: str) -> None:
    """A batch larger than one INSERT (one transaction of several) gets every report its id:
    new rows in input order, duplicates of stored rows and twins across chunk boundaries
    named by their original."""
    size = 2 * INSERT_CHUNK + 7
    stored = [new_report(n) for n in range(10_000, 10_003)]
    batch = [new_report(n) for n in range(size)]
    batch[5] = stored[0]  # a stored report again
    batch[INSERT_CHUNK] = batch[3]  # a twin of the first chunk, first in the second
    batch[INSERT_CHUNK + 1] = keyed_report(90_000, token=90_000, frame=10_001)  # stored[1]
    batch[size - 2] = stored[2]
    # The token of a report in the second chunk, in the third.
    batch[size - 1] = keyed_report(90_001, token=INSERT_CHUNK + 2, frame=90_001)

    async def main() -> None:
        store = PostgresStore(pg_schema)
        await store.open()
        try:
            old = await store.add_many(stored)
            outcomes = await store.add_many(batch)
            expected = {
                5: old[0].id,
                INSERT_CHUNK: outcomes[3].id,
                INSERT_CHUNK + 1: old[1].id,
                size - 1: outcomes[INSERT_CHUNK + 2].id,
                size - 2: old[2].id,
            }
            assert len(outcomes) == size
            assert {i: o.id for i, o in enumerate(outcomes) if o.duplicate} == expected
            new_ids = [o.id for i, o in enumerate(outcomes) if i not in expected]
            assert new_ids == sorted(new_ids)
            assert new_ids[0] > max(o.id for o in old)
            rows = await store.query(ReportQuery(limit=10_000))
            assert len(rows) == len(stored) + len(new_ids)
        finally:
            await store.close()

    asyncio.run(main())


def test_only_connections_that_answered_just_now_skip_the_check(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection is lent without a liveness round trip only after a success, and not
    once its backend has gone: a batch right after that still succeeds."""
    name = unique_name()
    monkeypatch.setattr(postgres, "_RECENT", 60.0)  # however slow this machine

    async def main() -> None:
        store = PostgresStore(tuned(pg_schema, name), min_size=1, max_size=1)
        await store.open()
        try:
            await store.add_many([new_report(1)])
            async with store._connection("test") as conn:  # the only one
                assert store._answered_recently(conn)
            with pytest.raises(StorageUnavailable, match="division by zero"):
                await store._transact(lambda conn: conn.execute("SELECT 1 / 0"))
            assert not store._answered_recently(conn)
            await store.add_many([new_report(2)])
            assert store._answered_recently(conn)
            # Autocommit: in a transaction, pg_stat_activity would not change.
            async with await psycopg.AsyncConnection.connect(pg_schema, autocommit=True) as admin:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (name,),
                )
                for _ in range(50):
                    cursor = await admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (name,),
                    )
                    if await cursor.fetchone() == (0,):
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the backend never exited")
            await asyncio.sleep(0.05)  # it has exited, so its socket is closed
            assert not store._answered_recently(conn)
            [outcome] = await store.add_many([new_report(3)])
            assert not outcome.duplicate
        finally:
            await store.close()

    asyncio.run(main())
