"""kill -9 under concurrent load, again and again, on the same files (QUALITY.md REL-2).

Each round starts ``tpas serve`` on the database and spool the previous round left behind,
loads it from several client threads and kills it with SIGKILL at a random moment. Under
steady load the SQLite writer is nearly always inside a commit, so the kill lands mid-commit
in most rounds; libfiu makes the other rounds die while reports are being spooled, or after
a replay committed the spool's reports but before it could delete the segments. The random
seed is printed, so a failing sequence can be replayed.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.pg import scratch_database, shared_dsn
from tests.reliability.faults import (
    EIO,
    Traffic,
    fiu_ctrl,
    metric,
    segments,
    spool_files,
    sqlite_tokens,
    start_server_under_fiu,
    until,
)
from tests.server.conftest import Server, free_port, start_server, write_config

DB_SYNC = "posix/io/sync/fdatasync"  # SQLite's syncs: its commits fail, batches are spooled
SPOOL_UNLINK = "posix/io/dir/unlink"  # the spool cannot delete replayed segments
MOMENTS = ("committing", "spooling", "replayed, segments kept")
KILLS = 6


def _kill(server: Server) -> None:
    server.stop(signal.SIGKILL, timeout=10)


def _bring_to(moment: str, server: Server, traffic: Traffic, rng: random.Random) -> None:
    """Run the server under load until ``moment``, at a random point within it."""
    if moment == "committing":
        time.sleep(rng.uniform(0.2, 1.2))
        return
    fiu_ctrl(server, f"enable name={DB_SYNC},failinfo={EIO}")
    spooling = time.monotonic()
    traffic.wait_for("spooled", 20, since=spooling)
    if moment == "spooling":
        time.sleep(rng.uniform(0.0, 0.8))
        return
    time.sleep(rng.uniform(0.2, 0.6))
    fiu_ctrl(server, f"enable name={SPOOL_UNLINK},failinfo={EIO}", f"disable name={DB_SYNC}")
    # The replay deletes segments only after its commit returned.
    until(lambda: "cannot be removed" in server.log(), 10, "a replay committed")


def test_sqlite_keeps_every_acknowledged_report_through_repeated_kill_9(tmp_path: Path) -> None:
    """After six kill -9 at random moments under load (mid-commit, while spooling, after a
    replay's commit but before its segments were deleted), each followed by a restart on the
    same files, every acknowledged report is stored exactly once and SQLite's integrity
    check passes."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    port = free_port()
    database = tmp_path / "tpas.db"
    spool = tmp_path / "spool"
    config = write_config(tmp_path, port, f"sqlite:///{database}")
    acknowledged: dict[str, str] = {}
    rounds: list[str] = []
    for run in range(KILLS):
        moment = MOMENTS[run % len(MOMENTS)]
        server = start_server_under_fiu(config, tmp_path, port)
        try:
            with Traffic(server, run=run) as traffic:
                traffic.wait_for("stored", 50, since=0)
                _bring_to(moment, server, traffic, rng)
                _kill(server)
        finally:
            _kill(server)
        acknowledged.update(traffic.acknowledged)
        rounds.append(f"{moment}: {len(traffic.acknowledged)} acked, {len(segments(spool))} seg")
    server = start_server(config, tmp_path, port)
    try:
        drained = until(lambda: not segments(spool), 30, "the spool is drained")
        replayed = metric(server, "tpas_reports_replayed_total")
    finally:
        code = server.stop()
    stored = sqlite_tokens(database)
    print(  # noqa: T201 - figures for the reader (pytest -s)
        f"\nseed {seed}; {KILLS} kills: {'; '.join(rounds)}\nacknowledged {len(acknowledged)} "
        f"({sum(a == 'spooled' for a in acknowledged.values())} from the spool), stored "
        f"{len(stored)} ({len(set(stored) - set(acknowledged))} in flight when killed), spool "
        f"drained {drained:.1f} s after the last restart ({replayed:.0f} reports replayed); "
        f"{len(spool_files(spool))} files left in the spool"
    )
    assert code == 0
    assert len(stored) == len(set(stored)), "a report was stored twice"
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost (seed {seed})"
    assert sum(a == "spooled" for a in acknowledged.values()) > 0
    assert len(acknowledged) >= KILLS * 50


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server."""
    with scratch_database(shared_dsn()) as url:
        yield url


def _postgres_check(url: str) -> tuple[list[str], str]:
    """Every stored token, and what amcheck found (heap and every index of ``reports``)."""
    with psycopg.connect(url, autocommit=True) as conn:
        tokens = [str(t) for (t,) in conn.execute("SELECT token FROM reports").fetchall()]
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        heap = conn.execute("SELECT * FROM verify_heapam('reports')").fetchall()
        indexes = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = 'reports'::regclass"
        ).fetchall()
        for (index,) in indexes:
            conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
    return tokens, f"heap problems {heap}, {len(indexes)} indexes checked"


def test_postgres_keeps_every_acknowledged_report_through_repeated_kill_9(
    database: str, tmp_path: Path
) -> None:
    """After five kill -9 at random moments under load, each followed by a restart on the
    same database and spool, every acknowledged report is in PostgreSQL exactly once and
    amcheck finds the table and its indexes sound."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    port = free_port()
    config = write_config(tmp_path, port, database)
    acknowledged: dict[str, str] = {}
    kills = 5
    for run in range(kills):
        server = start_server(config, tmp_path, port)
        try:
            with Traffic(server, run=0x100 + run) as traffic:
                traffic.wait_for("stored", 50, since=0)
                time.sleep(rng.uniform(0.2, 1.2))
                _kill(server)
        finally:
            _kill(server)
        acknowledged.update(traffic.acknowledged)
    stored, amcheck = _postgres_check(database)
    print(  # noqa: T201 - figures for the reader (pytest -s)
        f"\nseed {seed}; {kills} kills: acknowledged {len(acknowledged)}, stored {len(stored)} "
        f"({len(set(stored) - set(acknowledged))} in flight when killed); amcheck: {amcheck}"
    )
    assert len(stored) == len(set(stored)), "a report was stored twice"
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost (seed {seed})"
    assert "heap problems []" in amcheck
    assert not segments(tmp_path / "spool")
    assert len(acknowledged) >= kills * 50
