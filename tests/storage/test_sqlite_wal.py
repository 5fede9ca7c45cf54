"""The SQLite write-ahead log stays bounded under steady writes (found by bench/soak.py: with
passive checkpoints alone it grew by ~15 GB an hour at 200 reports/s)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tpas.storage import NewReport, SqliteStore
from tpas.storage import sqlite as sqlite_module

LIMIT = 256 * 1024


def report(n: int) -> NewReport:
    """A distinct report number ``n`` with a body of some size."""
    return NewReport(
        application="farm",
        kind="uplink",
        dev_eui=f"{n:016X}",
        time=None,
        time_ts=float(n),
        received_at=float(n),
        token=f"token-{n}",
        frame_key=f"frame-{n}",
        body=b'{"DevEUI_uplink": {}}' + b" " * 600,
        content_type="application/json",
    )


async def write_steadily(path: Path, target: int, seconds: float) -> tuple[int, int]:
    """Commit small batches back to back until ``target`` bytes of reports are written (at
    most ``seconds``); (largest WAL size seen after the first second, bytes written)."""
    store = SqliteStore(path)
    await store.open()
    wal = Path(f"{path}-wal")
    largest = written = n = 0
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds and written < target:
            batch = [report(n + i) for i in range(4)]
            n += len(batch)
            await store.add_many(batch)
            written += sum(len(r.body) for r in batch)
            if elapsed > 1.0 and wal.exists():
                largest = max(largest, wal.stat().st_size)
    finally:
        await store.close()
    return largest, written


def test_the_write_ahead_log_is_emptied_once_past_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under commits arriving back to back, the write-ahead log never grows far past its
    limit: the writer empties it, where passive checkpoints alone never reset it."""
    monkeypatch.setattr(sqlite_module, "_WAL_LIMIT", LIMIT)
    # A byte target rather than a duration: a busy machine commits more slowly.
    largest, written = asyncio.run(write_steadily(tmp_path / "tpas.db", 30 * LIMIT, 60.0))
    assert written > 20 * LIMIT, "too little written to tell"
    assert largest < 8 * LIMIT, f"WAL reached {largest} bytes"
