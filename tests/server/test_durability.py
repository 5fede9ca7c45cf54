"""Durability under abrupt and graceful stops (QUALITY.md REL-2, REL-3), on SQLite."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.server.conftest import Server, free_port, signed, start_server, write_config
from tpas.testing import make_uplink


class Load:
    """Client threads posting distinct signed uplinks and recording what was acknowledged."""

    def __init__(self, server: Server, threads: int = 12, run: int = 0) -> None:
        self.server = server
        self.run = run
        self.acknowledged: set[str] = set()
        self.errors = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.server.url, timeout=5) as client:
            counter = 0
            while not self.stop.is_set():
                counter += 1
                # Distinct frames across runs too: the same frame again is a duplicate.
                dev_eui = f"{self.run:04X}{worker:04X}{counter:08X}"
                report = signed(make_uplink(dev_eui, fcnt_up=counter), time=datetime.now(UTC))
                try:
                    answer = client.post(
                        f"/thingpark/farm?{report.query}",
                        content=report.body,
                        headers={"Content-Type": report.content_type},
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.errors += 1
                    time.sleep(0.01)
                    continue
                if answer.status_code == 200:
                    with self._lock:
                        self.acknowledged.add(report.token)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)


def _stored_tokens(database: Path) -> list[str]:
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [row[0] for row in connection.execute("SELECT token FROM reports")]


def _wait_for(load: Load, count: int, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while len(load.acknowledged) < count and time.monotonic() < deadline:
        time.sleep(0.02)


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
            _wait_for(load, 300)
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
        _wait_for(load, 300)
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.log()
    stored = set(_stored_tokens(database))
    assert load.acknowledged <= stored
    assert len(load.acknowledged) >= 300
