"""Soak test: ``tpas serve`` at a steady rate for a long time, watching for slow growth.

Run ``.venv/bin/python bench/soak.py`` (30 minutes; ``--quick`` for one minute; ``--help``).
It starts a real ``tpas serve`` on SQLite in a temporary directory (or on ``--storage-url``),
posts distinct, freshly signed uplinks to it at ``--rate`` reports per second on a fixed
schedule over ``--connections`` keep-alive connections (open loop: a late answer does not
slow the schedule; a report due while every connection is busy waits, and its latency
counts from the moment it was due), and every ``--interval`` seconds prints one row:

- the reports due, answered 200, answered otherwise, and lost (no HTTP answer);
- latency p50 / p99 / max over the interval;
- the server's resident memory (VmRSS), open file descriptors (``/proc/PID/fd``), CPU;
- the size of the database file and of its write-ahead log (SQLite).

At the end it fits a straight line through the memory, file-descriptor, p99 and WAL
samples (after a warm-up, the first fifth of the run or at least two samples, and without
the last one) and gives, for each, the slope per hour and a verdict: "GROWTH" when the
slope is more than three standard errors above zero and adds 5% of the mean over the run,
"slight rise" when it is clear but smaller, else "no growth trend". It then checks that the
database holds every report that was answered 200. Not run in CI: a slow leak needs a
long run to show.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx

from tpas.protocol import AsKey
from tpas.testing import make_uplink, sign_report

APPLICATION: Final = "soak"
AS_ID: Final = "TWA_100002167.1111.AS"
API_TOKEN: Final = "soak-api-token-0123456789abcdef"  # noqa: S105 - a throwaway server's
DEVICES: Final = 10_000
MIB: Final = 1024 * 1024

GROWTH_T: Final = 3.0
"""A slope counts as growth only this many standard errors above zero ..."""
GROWTH_SHARE: Final = 0.05
"""... and only if, over the measured run, it adds this share of the mean value or more."""


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """The ``tpas serve`` process under test."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    db_path: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def file_mib(self, suffix: str = "") -> float:
        if self.db_path is None:
            return float("nan")
        path = Path(f"{self.db_path}{suffix}")
        return path.stat().st_size / MIB if path.exists() else 0.0

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@contextlib.contextmanager
def running_server(directory: Path, storage_url: str | None, key: str) -> Iterator[Server]:
    """``tpas serve`` with a generated configuration, stopped afterwards."""
    port = free_port()
    db_path = None
    if storage_url is None:
        db_path = directory / "tpas.db"
        storage_url = f"sqlite:///{db_path}"
    config = directory / "tpas.toml"
    config.write_text(
        f"""\
[server]
host = "127.0.0.1"
port = {port}

[storage]
url = "{storage_url}"
spool_dir = "{directory / "spool"}"

[api]
tokens = ["{API_TOKEN}"]

[[applications]]
name = "{APPLICATION}"
as_id = "{AS_ID}"
as_keys = ["{key}"]
""",
        encoding="utf-8",
    )
    log_path = directory / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter
            [sys.executable, "-m", "tpas", "serve", "--config", str(config)],
            cwd=directory,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path, db_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tpas serve exited at start:\n{server.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"tpas serve did not become ready:\n{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- the load


@dataclass
class Interval:
    """What happened to the reports due in one sampling interval."""

    due: int = 0
    ok: int = 0
    refused: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Sample:
    """One row of the table."""

    at: float
    due: int
    ok: int
    refused: int
    lost: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mib: float
    fds: int
    cpu_percent: float
    db_mib: float
    wal_mib: float


class Soak:
    """Sends reports on a fixed schedule and samples the server."""

    def __init__(
        self, server: Server, key: str, rate: float, duration: float, connections: int
    ) -> None:
        self.server = server
        self.key = AsKey(key)
        self.rate = rate
        self.duration = duration
        self.connections = connections
        self.current = Interval()
        self.samples: list[Sample] = []
        self.acknowledged = 0
        self.sent = 0
        self.started = 0.0

    def request(self, number: int) -> tuple[str, bytes, str]:
        """Report ``number``, signed now: (path?query, body, content type)."""
        fcnt, device = divmod(number, DEVICES)
        report = sign_report(
            make_uplink(f"{0x70B3D5E75E000000 + device:016X}", fcnt_up=fcnt),
            key=self.key,
            as_id=AS_ID,
            time=datetime.now(UTC),
        )
        return f"/thingpark/{APPLICATION}?{report.query}", report.body, report.content_type

    async def worker(self, queue: asyncio.Queue[tuple[int, float] | None]) -> None:
        """One keep-alive connection: sends the reports due, one at a time, in order."""
        host, port = self.server.url.removeprefix("http://").split(":")
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (item := await queue.get()) is not None:
            number, due = item
            interval = self.current
            target, body, content_type = self.request(number)
            head = (
                f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            self.sent += 1
            try:
                if connection is None:
                    connection = await asyncio.open_connection(host, int(port))
                reader, writer = connection
                writer.write(head.encode() + body)
                status = await read_status(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                interval.lost += 1
                if connection is not None:
                    connection[1].close()
                connection = None
                continue
            interval.latencies.append(time.monotonic() - due)
            if status == 200:
                interval.ok += 1
                self.acknowledged += 1
            else:
                interval.refused += 1
        if connection is not None:
            connection[1].close()

    async def load(self) -> None:
        """Put each report on the queue when it is due; the workers send them."""
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        workers = [asyncio.create_task(self.worker(queue)) for _ in range(self.connections)]
        number = 0
        step = 1 / self.rate
        while (due := self.started + number * step) < self.started + self.duration:
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.put_nowait((number, due))
            self.current.due += 1
            number += 1
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.wait(workers, timeout=60)

    async def sample_every(self, seconds: float, stop: asyncio.Event) -> None:
        cpu = self.server.cpu_seconds()
        last = time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=seconds)
            now = time.monotonic()
            interval, self.current = self.current, Interval()
            cpu_now = self.server.cpu_seconds()
            latencies = sorted(interval.latencies) or [float("nan")]
            sample = Sample(
                at=now - self.started,
                due=interval.due,
                ok=interval.ok,
                refused=interval.refused,
                lost=interval.lost,
                p50_ms=1e3 * latencies[len(latencies) // 2],
                p99_ms=1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                max_ms=1e3 * latencies[-1],
                rss_mib=self.server.rss_mib(),
                fds=self.server.open_fds(),
                cpu_percent=100 * (cpu_now - cpu) / (now - last),
                db_mib=self.server.file_mib(),
                wal_mib=self.server.file_mib("-wal"),
            )
            cpu, last = cpu_now, now
            self.samples.append(sample)
            progress_clear()
            print(row(sample), flush=True)

    async def progress(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
            elapsed = time.monotonic() - self.started
            progress_line(
                f"  {elapsed:6.0f} s / {self.duration:.0f} s  sent {self.sent:,}  "
                f"answered 200 {self.acknowledged:,}"
            )

    async def run(self, interval: float) -> None:
        self.started = time.monotonic()
        stop = asyncio.Event()
        watchers = [
            asyncio.create_task(self.sample_every(interval, stop)),
            asyncio.create_task(self.progress(stop)),
        ]
        try:
            await self.load()
        finally:
            stop.set()
            await asyncio.gather(*watchers)
            progress_clear()


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer; its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(lines[0].split()[1])


# --------------------------------------------------------------------------- output

HEADER: Final = (
    f"{'t s':>7} {'due':>7} {'200':>7} {'other':>6} {'lost':>5} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'max ms':>7} {'RSS MiB':>8} {'fds':>5} {'CPU %':>6} {'db MiB':>7} {'WAL MiB':>8}"
)


def row(s: Sample) -> str:
    return (
        f"{s.at:7.0f} {s.due:7d} {s.ok:7d} {s.refused:6d} {s.lost:5d} {s.p50_ms:7.1f} "
        f"{s.p99_ms:7.1f} {s.max_ms:7.1f} {s.rss_mib:8.1f} {s.fds:5d} {s.cpu_percent:6.0f} "
        f"{s.db_mib:7.1f} {s.wal_mib:8.2f}"
    )


def progress_line(text: str) -> None:
    if sys.stderr.isatty():
        print(f"\r{text}\x1b[K", end="", file=sys.stderr, flush=True)


def progress_clear() -> None:
    if sys.stderr.isatty():
        print("\r\x1b[K", end="", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Trend:
    """A least-squares line through (seconds, value) points."""

    slope: float
    """Units per second."""
    stderr: float
    mean: float
    span: float
    """Seconds covered."""

    @property
    def rising(self) -> bool:
        """Rising clearly above the noise."""
        return self.slope > 0 and self.slope > GROWTH_T * self.stderr

    @property
    def growing(self) -> bool:
        """Rising clearly, and by a share of the value that matters over the run."""
        return self.rising and self.slope * self.span >= GROWTH_SHARE * abs(self.mean)


def trend(points: Sequence[tuple[float, float]]) -> Trend | None:
    """The fitted line, or ``None`` with fewer than three points."""
    if len(points) < 3:
        return None
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - mean_y - slope * (x - mean_x)) ** 2 for x, y in zip(xs, ys, strict=True))
    stderr = (residual / (len(xs) - 2) / sxx) ** 0.5
    return Trend(slope, stderr, mean_y, xs[-1] - xs[0])


def verdicts(samples: Sequence[Sample]) -> list[str]:
    """One line per watched quantity: "no growth trend" or the slope per hour."""
    # The last sample holds the end of the load (connections closing): left out too.
    skip = max(2, len(samples) // 5)
    measured = samples[skip:-1]
    watched = {
        "RSS": ("MiB", [(s.at, s.rss_mib) for s in measured]),
        "open fds": ("fds", [(s.at, float(s.fds)) for s in measured]),
        "p99 latency": ("ms", [(s.at, s.p99_ms) for s in measured]),
        "WAL size": ("MiB", [(s.at, s.wal_mib) for s in measured]),
    }
    lines = [f"trend over {len(measured)} samples after a warm-up of {skip}:"]
    for name, (unit, points) in watched.items():
        points = [(x, y) for x, y in points if y == y]  # NaN: not measured (PostgreSQL WAL)
        fit = trend(points)
        if fit is None:
            lines.append(f"  {name:12} not enough samples")
            continue
        per_hour = fit.slope * 3600
        figures = f"slope {per_hour:+.2f} {unit}/h ± {fit.stderr * 3600:.2f}, mean {fit.mean:.1f}"
        if fit.growing:
            verdict = "GROWTH"
        elif fit.rising:
            verdict = "slight rise"  # clear, but small over this run: run longer
        else:
            verdict = "no growth trend"
        lines.append(f"  {name:12} {verdict:16} ({figures})")
    return lines


def stored_reports(server: Server) -> int | None:
    """Rows in the SQLite database after the server stopped, or ``None`` (PostgreSQL)."""
    if server.db_path is None:
        return None
    with contextlib.closing(sqlite3.connect(server.db_path)) as conn:
        row = conn.execute("SELECT count(*) FROM reports").fetchone()
    return int(row[0])


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, help="seconds to run (1800)")
    parser.add_argument("--rate", type=float, default=200.0, help="reports per second (200)")
    parser.add_argument("--interval", type=float, help="seconds between samples (30)")
    parser.add_argument(
        "--connections", type=int, default=32, help="keep-alive connections to send over (32)"
    )
    parser.add_argument(
        "--storage-url", help="a PostgreSQL URL to use instead of a fresh SQLite file"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one minute, a sample every 5 s (checks the tool)"
    )
    args = parser.parse_args(argv)
    duration = args.duration or (60.0 if args.quick else 1800.0)
    interval = args.interval or (5.0 if args.quick else 30.0)
    key = secrets.token_hex(16)
    print(
        f"# tpas soak: {args.rate:g} reports/s for {duration:g} s, a sample every {interval:g} s, "
        f"started {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="tpas-soak-") as tmp:
        with running_server(Path(tmp), args.storage_url, key) as server:
            print(f"# server pid {server.pid}, {server.rss_mib():.1f} MiB at start\n")
            print(HEADER)
            soak = Soak(server, key, args.rate, duration, args.connections)
            asyncio.run(soak.run(interval))
            exit_code = server.stop()
            stored = stored_reports(server)
        samples = soak.samples
        print()
        for line in verdicts(samples):
            print(line)
        lost = sum(s.lost for s in samples)
        refused = sum(s.refused for s in samples)
        print(
            f"sent {soak.sent:,}, answered 200 {soak.acknowledged:,}, otherwise {refused:,}, "
            f"no answer {lost:,}; server exit code {exit_code}"
        )
        problems = []
        if stored is not None:
            print(f"stored {stored:,} (every report answered 200 must be there)")
            if stored < soak.acknowledged:
                problems.append(f"only {stored:,} of {soak.acknowledged:,} acknowledged stored")
        if exit_code != 0:
            problems.append(f"the server exited with {exit_code}:\n{server.log_tail()}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
