"""Durability under abrupt and graceful stops (QUALITY.md REL-2, REL-3), on SQLite."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from tests.server.conftest import free_port, start_server, write_config
from tests.server.load import Load


def _stored_tokens(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [row[0] for row in connection.execute("SELECT token FROM reports")]


def test_kill_9_under_load_loses_no_acknowledged_report(tmp_path: Path) -> None:
    """After repeated kill -9 under concurrent load, every acknowledged report is stored
    exactly once and the database passes its integrity check."""
    port = free_port()
    database = tmp_path / "tpas.db"
    config = write_config(tmp_path, port, f"sqlite:///{database}")
    rounds = 3
    all_acknowledged: set[str] = set()
    for run in range(rounds):
        server = start_server(config, tmp_path, port)
        with Load(server, run=run) as load:
            load.wait_for(300)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
        server.client.close()
        all_acknowledged |= load.acknowledged
    stored = _stored_tokens(database)
    assert len(stored) == len(set(stored)), "a report was stored twice"
    missing = all_acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost"
    assert len(all_acknowledged) >= rounds * 300


def test_sigterm_finishes_in_flight_work_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM under load: the server exits 0 and every acknowledged report is stored."""
    port = free_port()
    database = tmp_path / "tpas.db"
    server = start_server(write_config(tmp_path, port, f"sqlite:///{database}"), tmp_path, port)
    with Load(server) as load:
        load.wait_for(300)
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    stored = set(_stored_tokens(database))
    assert load.acknowledged <= stored
    assert len(load.acknowledged) >= 300
