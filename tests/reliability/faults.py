"""Fault injection for the reliability tier: a tmpfs that fills up, libfiu failure points
in a running ``tpas serve``, and traffic that remembers what each report was told.

libfiu's ``fiu-run -x`` preloads a library that wraps the POSIX I/O calls of the server
process; ``fiu-ctrl`` then switches failure points on and off while it runs. SQLite writes
with ``pwrite64`` and syncs with ``fdatasync``; the spool writes with ``write`` and syncs
with ``fsync``; sockets use ``write``/``writev``. So ``posix/io/rw/pwrite`` and
``posix/io/sync/fdatasync`` fail the database alone, ``posix/io/sync/fsync`` the spool alone.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import Server, start_server
from tests.server.load import post_distinct_uplink

__all__ = [
    "EIO",
    "Outcome",
    "Traffic",
    "fill",
    "fiu_ctrl",
    "logged_exceptions",
    "metric",
    "segments",
    "spool_files",
    "sqlite_tokens",
    "start_server_under_fiu",
    "tally",
    "tmpfs",
    "until",
]

EIO = errno.EIO  # the errno the failure points report (failinfo)


def until(condition: Callable[[], bool], limit: float, what: str) -> float:
    """Wait until ``condition()`` holds; returns the seconds it took, fails after ``limit``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() < started + limit, f"timed out after {limit} s waiting until {what}"
        time.sleep(0.05)
    return time.monotonic() - started


# Storage that fills up.


@contextmanager
def tmpfs(directory: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted on ``directory`` (created), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True, check=False).returncode:
            # Still busy (a process that did not exit): detach it so nothing stays mounted.
            subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file into ``directory`` until its file system is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1 << 9):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


# libfiu.


def start_server_under_fiu(config: Path, directory: Path, port: int, wait: float = 30) -> Server:
    """``tpas serve`` run by ``fiu-run -x`` (every failure point off), once it is ready;
    skips when libfiu's tools are not installed."""
    fiu_run = shutil.which("fiu-run")
    if fiu_run is None or shutil.which("fiu-ctrl") is None:
        pytest.skip("needs libfiu's fiu-run and fiu-ctrl (Debian package fiu-utils)")
    return start_server(
        config, directory, port, wait, prefix=(fiu_run, "-x", "-f", str(directory / "fiu"))
    )


def fiu_ctrl(server: Server, *commands: str) -> None:
    """Send libfiu control commands (``enable name=...``, ``disable name=...``) to a server
    started by :func:`start_server_under_fiu`."""
    options = [part for command in commands for part in ("-c", command)]
    subprocess.run(
        ["fiu-ctrl", "-f", str(server.directory / "fiu"), *options, str(server.process.pid)],
        check=True,
        capture_output=True,
        timeout=10,
    )


# What the server stored, spooled and logged.


def sqlite_tokens(database: Path) -> list[str]:
    """Every stored report's token, after asserting ``PRAGMA integrity_check`` is ok."""
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [token for (token,) in connection.execute("SELECT token FROM reports")]


def segments(spool: Path) -> list[Path]:
    """The spool's segments waiting for replay."""
    return sorted(spool.glob("*.spool"))


def spool_files(spool: Path) -> list[str]:
    """Every file name in the spool directory, segments and anything left beside them."""
    return sorted(p.name for p in spool.iterdir()) if spool.is_dir() else []


def metric(server: Server, name: str) -> float:
    """One sample of the server's ``/metrics`` (a counter not counted yet is 0)."""
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def logged_exceptions(server: Server) -> list[str]:
    """Log lines that carry an exception: a traceback nobody expected."""
    found = []
    for line in server.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                found.append(line)
            continue
        if isinstance(record, dict) and "exc_type" in record:
            found.append(line)
    return found


# Traffic.


@dataclass(frozen=True, slots=True)
class Outcome:
    """One report sent: its token, when (monotonic), and what the server answered."""

    token: str
    sent: float
    seconds: float
    status: int  # 0: no HTTP answer
    answer: str  # "stored", "duplicate", "spooled", a refusal's reason, or the raw body

    @property
    def acknowledged(self) -> bool:
        """A 2xx: ThingPark forgets the report, so tpas must have it."""
        return 200 <= self.status < 300


class Traffic:
    """Client threads posting distinct signed uplinks and recording every answer."""

    def __init__(self, server: Server, *, run: int, threads: int = 8, timeout: float = 10) -> None:
        self.server = server
        self.run = run
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._post, args=(i,), daemon=True) for i in range(threads)
        ]

    def _post(self, worker: int) -> None:
        with httpx.Client(base_url=self.server.url, timeout=self.timeout) as client:
            counter = 0
            while not self._stop.is_set():
                counter += 1
                token, sent, response = post_distinct_uplink(client, self.run, worker, counter)
                seconds = time.monotonic() - sent
                if response is None:
                    self._record(Outcome(token, sent, seconds, 0, ""))
                    time.sleep(0.01)
                    continue
                self._record(Outcome(token, sent, seconds, response.status_code, _answer(response)))

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    @property
    def acknowledged(self) -> dict[str, str]:
        """Token -> answer of every report answered 2xx."""
        with self._lock:
            return {o.token: o.answer for o in self.outcomes if o.acknowledged}

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        """The outcomes of requests sent between two ``time.monotonic()`` readings."""
        with self._lock:
            return [o for o in self.outcomes if start <= o.sent < end]

    def wait_for(
        self, answer: str, count: int, since: float, limit: float = 20, *, required: bool = True
    ) -> float:
        """Wait until ``count`` requests sent after ``since`` got ``answer``; the seconds.
        Fails after ``limit`` seconds, unless not ``required``: then returns ``limit``."""

        def enough() -> bool:
            done = sum(o.answer == answer for o in self.between(since)) >= count
            return done or (not required and time.monotonic() > since + limit)

        until(enough, limit + 1, f"{count} reports are answered {answer!r}")
        return min(time.monotonic() - since, limit)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)


def _answer(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(body, dict):
        return response.text[:200]
    if body.get("spooled"):
        return "spooled"
    return str(body.get("status") or body.get("error") or response.text[:200])


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    """How many outcomes got each answer (``"503 storage_unavailable"``, ``"200 stored"``)."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = f"{outcome.status} {outcome.answer}".strip()
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
