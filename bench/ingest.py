"""Ingest benchmark: ``tpas serve`` on SQLite and PostgreSQL against a bare endpoint.

Run ``.venv/bin/python bench/ingest.py`` (``--quick`` for a short run; ``--help``). It
drives real servers over loopback with wrk (``apt-get install -y wrk``) and a Lua script
(``bench/ingest.lua``) replaying pre-signed requests, and prints req/s, p50 and p99 for:

1. ``bare``: ``bench/bare_app.py``, an ASGI endpoint that only verifies and parses each
   report (``parse`` -> ``verify_report`` -> ``to_model``) on the same server stack as tpas
   (uvicorn, uvloop, httptools, no access log) -- the baseline;
2. ``tpas serve`` on SQLite (WAL, ``synchronous=FULL``, group commit), in a temp dir;
3. ``tpas serve`` on PostgreSQL (a fresh database on the local server, dropped afterwards).

Every request is distinct and correctly signed: typed JSON uplinks of ~1 KB with 1-2
gateways, signed before the run, so the bench config turns freshness off
(``max_time_drift = 0``). Each wrk thread replays its own slice; no request is sent twice
to a server. All three servers run side by side; each is warmed up, then measured in
rounds that alternate between them, so the ratios compare like with like. After the run,
the rows each database holds are checked against what wrk sent and was answered.

Quote the ratios to the bare endpoint, not the absolute figures (QUALITY.md): those drift
with the machine and whatever else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx
import psycopg
from psycopg import sql

from tpas.protocol import AsKey, format_time
from tpas.testing import make_uplink, sign_report

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parent
DOCS: Final = REPO / "docs" / "benchmarks.md"
LUA: Final = BENCH_DIR / "ingest.lua"
BARE_APP: Final = BENCH_DIR / "bare_app.py"

APPLICATION: Final = "bench"
AS_ID: Final = "TWA_100002167.1111.AS"
API_TOKEN: Final = "bench-api-token-0123456789abcdef"  # noqa: S105 - a throwaway server's
DEVICES: Final = 10_000
BASE_TIME: Final = datetime(2026, 1, 1, tzinfo=UTC)
CHUNK: Final = 5_000
"""Reports generated per worker task."""

SQLITE_RATIO: Final = 0.5
SQLITE_P99_MS: Final = 25.0
POSTGRES_RATIO: Final = 0.4
IDLE_WARNING: Final = 80.0
"""Machine-wide CPU idle % below which the run is flagged as disturbed."""

WRK_MISSING: Final = """\
wrk is not installed; this benchmark needs it as its load generator.
Install it with:   apt-get install -y wrk        (Debian/Ubuntu; sudo if not root)
               or: brew install wrk              (macOS)
then run this command again."""


# --------------------------------------------------------------------------- requests


def signed_request(index: int, key: str) -> tuple[str, bytes]:
    """Request number ``index`` as (path?query, body); distinct for every index."""
    rng = random.Random(index)
    dev = index % DEVICES
    at = BASE_TIME + timedelta(milliseconds=10 * index)
    uplink = make_uplink(
        f"{0x70B3D5E75E000000 + dev:016X}",
        fcnt_up=index // DEVICES,
        fport=1 + dev % 8,
        payload_hex=rng.randbytes(rng.randint(8, 24)).hex(),
        time=format_time(at),
        rssi=round(rng.uniform(-120, -60), 1),
        snr=round(rng.uniform(-15, 10), 2),
        spreading_factor=rng.randint(7, 12),
        gateways=rng.randint(1, 2),
        lost_uplinks_as=0,
        ack_bit=0,
        payload_encryption=0,
        esp=round(rng.uniform(-125, -60), 1),
        battery_level=rng.randint(1, 254),
        battery_time=format_time(at - timedelta(hours=1)),
        margin=rng.randint(0, 20),
        uplink_dc=0.001,
        uplink_dc_sub_band=0.001,
        max_wait_as_resps=2000,
        airtime=0.061696,
        raw_mac_commands="0703",
        driver_cfg={"mod": {"pId": "abeeway", "mId": "asset-tracker", "ver": "2"}},
    )
    signed = sign_report(uplink, key=AsKey(key), as_id=AS_ID, time=at + timedelta(seconds=1))
    return f"/thingpark/{APPLICATION}?{signed.query}", signed.body


def http_request(target: str, body: bytes) -> bytes:
    """The bytes of one POST as ThingPark sends it."""
    head = (
        f"POST {target} HTTP/1.1\r\nHost: tpas-bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _chunk(start: int, stop: int, threads: int, key: str) -> tuple[list[bytes], int]:
    """Requests ``start..stop``, one byte string per wrk thread, and their body bytes.

    Each request is written as its length in 8 decimal digits, then its bytes (the format
    bench/ingest.lua reads).
    """
    parts: list[list[bytes]] = [[] for _ in range(threads)]
    body_bytes = 0
    for index in range(start, stop):
        target, body = signed_request(index, key)
        raw = http_request(target, body)
        body_bytes += len(body)
        parts[index % threads].append(b"%08d%b" % (len(raw), raw))
    return [b"".join(p) for p in parts], body_bytes


@dataclass(frozen=True, slots=True)
class DataSet:
    """Pre-signed requests in ``prefix.0 .. prefix.{threads-1}``, one file per wrk thread."""

    prefix: Path
    count: int


def generate(
    directory: Path, sets: dict[str, int], threads: int, key: str
) -> tuple[dict[str, DataSet], float]:
    """Write each named set of distinct requests; returns the sets and the mean body size.

    Signing takes ~75 µs per request; the work is spread over every CPU.
    """
    result: dict[str, DataSet] = {}
    total_bytes = 0
    start = 0
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool, contextlib.ExitStack() as stack:
        for name, count in sets.items():
            files = [
                stack.enter_context((directory / f"{name}.{t}").open("wb")) for t in range(threads)
            ]
            bounds = [
                (lo, min(lo + CHUNK, start + count)) for lo in range(start, start + count, CHUNK)
            ]
            for job in [pool.submit(_chunk, lo, hi, threads, key) for lo, hi in bounds]:
                parts, body_bytes = job.result()
                total_bytes += body_bytes
                for f, part in zip(files, parts, strict=True):
                    f.write(part)
            result[name] = DataSet(directory / name, count)
            start += count
    return result, total_bytes / max(start, 1)


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine_busy_seconds() -> float:
    """CPU seconds spent busy so far, all cores and processes together (from /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One server process under test."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    count_rows: str | None = None
    """How to count stored reports: a SQLite path or a PostgreSQL URL (None: bare)."""

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

    def stored(self) -> int:
        """The number of stored reports (call after :meth:`stop`)."""
        assert self.count_rows is not None
        if self.count_rows.startswith("postgresql://"):
            with psycopg.connect(self.count_rows) as conn:
                row = conn.execute("SELECT count(*) FROM reports").fetchone()
        else:
            with contextlib.closing(sqlite3.connect(self.count_rows)) as db:
                row = db.execute("SELECT count(*) FROM reports").fetchone()
        assert row is not None
        return int(row[0])


def _launch(name: str, args: list[str], directory: Path, ready_path: str, port: int) -> Server:
    log_path = directory / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            args, cwd=directory, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    server = Server(name, process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{server.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(server.url + ready_path, timeout=1)
            if ready_path != "/readyz" or answer.status_code == 200:
                return server
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not become ready:\n{server.log_tail()}")


def start_bare(directory: Path, key: str) -> Server:
    """The bare verify-and-parse endpoint."""
    port = free_port()
    args = [sys.executable, str(BARE_APP), "--port", str(port), "--as-id", AS_ID, "--key", key]
    return _launch("bare", args, directory, "/", port)


def start_tpas(name: str, directory: Path, storage_url: str, key: str) -> Server:
    """``tpas serve`` with a generated config in ``directory``."""
    port = free_port()
    config = directory / f"{name}.toml"
    config.write_text(
        f"""\
[server]
host = "127.0.0.1"
port = {port}

[storage]
url = "{storage_url}"
spool_dir = "{directory / (name + "-spool")}"

[api]
tokens = ["{API_TOKEN}"]

[[applications]]
name = "{APPLICATION}"
as_id = "{AS_ID}"
as_keys = ["{key}"]
max_time_drift = 0   # freshness off: the bench signs its requests before the run
""",
        encoding="utf-8",
    )
    args = [sys.executable, "-m", "tpas", "serve", "--config", str(config)]
    return _launch(name, args, directory, "/readyz", port)


@dataclass(frozen=True, slots=True)
class CommitStats:
    """Cumulative commit metrics of a tpas server."""

    batches: float = 0.0
    reports: float = 0.0
    seconds: float = 0.0

    def minus(self, other: CommitStats) -> CommitStats:
        return CommitStats(
            self.batches - other.batches, self.reports - other.reports, self.seconds - other.seconds
        )


def commit_stats(server: Server) -> CommitStats:
    """Read the commit-batch histograms from ``/metrics``."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    values: dict[str, float] = {}
    for name in (
        "tpas_commit_batch_size_sum",
        "tpas_commit_batch_size_count",
        "tpas_commit_seconds_sum",
    ):
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        values[name] = float(match.group(1)) if match else 0.0
    return CommitStats(
        values["tpas_commit_batch_size_count"],
        values["tpas_commit_batch_size_sum"],
        values["tpas_commit_seconds_sum"],
    )


# --------------------------------------------------------------------------- PostgreSQL


def postgres_problem(base: str) -> str | None:
    """Why PostgreSQL at ``base`` cannot be used, or ``None``."""
    try:
        with psycopg.connect(f"{base}/postgres", connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@contextlib.contextmanager
def postgres_database(base: str) -> Iterator[str]:
    """A fresh database ``tpas_bench_<random>``, dropped afterwards; yields its URL."""
    name = f"tpas_bench_{secrets.token_hex(4)}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class WrkRun:
    """One wrk run against one server, from the Lua script's ``done()`` line."""

    requests: int
    duration_us: int
    status_errors: int
    socket_errors: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    sent: int
    exhausted: int
    server_cpu: float
    wrk_cpu: float
    machine_cpu: float
    wall: float
    """Seconds the wrk process ran, loading its data included."""

    @property
    def seconds(self) -> float:
        return self.duration_us / 1e6

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def acked(self) -> int:
        """2xx answers (wrk counts 4xx/5xx as status errors)."""
        return self.requests - self.status_errors

    @property
    def unanswered(self) -> int:
        """Sent, but still in flight when wrk stopped: the server handles them anyway."""
        return self.sent - self.requests


def run_wrk(
    server: Server, data: DataSet, seconds: float, connections: int, threads: int
) -> WrkRun:
    """Replay ``data`` against ``server`` for ``seconds``."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        server.url,
        "--",
        str(data.prefix),
        "GATE",
        str(threads),
    ]
    before_server = cpu_seconds(server.process.pid)
    before_machine = machine_busy_seconds()
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wrk-gate-") as gate:
        command[command.index("GATE")] = gate
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    wall = time.perf_counter() - started
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = cpu_seconds(server.process.pid) - before_server
    machine_cpu = machine_busy_seconds() - before_machine
    wrk_cpu = (after_wrk.ru_utime - before_wrk.ru_utime) + (
        after_wrk.ru_stime - before_wrk.ru_stime
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len("BENCH ") :])
    return WrkRun(
        requests=raw["requests"],
        duration_us=raw["duration_us"],
        status_errors=raw["status_errors"],
        socket_errors=raw["connect_errors"]
        + raw["read_errors"]
        + raw["write_errors"]
        + raw["timeouts"],
        p50_us=raw["p50_us"],
        p90_us=raw["p90_us"],
        p99_us=raw["p99_us"],
        max_us=raw["max_us"],
        sent=raw["sent"],
        exhausted=raw["exhausted"],
        server_cpu=server_cpu,
        wrk_cpu=wrk_cpu,
        machine_cpu=machine_cpu,
        wall=wall,
    )


# --------------------------------------------------------------------------- results


@dataclass
class Target:
    """One server under test and what it measured."""

    name: str
    label: str
    count_commits: bool = False
    server: Server | None = None
    skipped: str | None = None
    warmup: WrkRun | None = None
    rounds: list[WrkRun] = field(default_factory=list)
    commits: CommitStats | None = None
    stored: int | None = None
    exit_code: int | None = None

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.rounds)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_us for r in self.rounds) / 1000

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_us for r in self.rounds) / 1000

    def cpu(self) -> tuple[float, float, float]:
        """Server, wrk and whole-machine CPU use in % of one core, over the measured rounds.

        The server's share is over the timed part of the runs; wrk's and the machine's
        over the whole wrk processes, loading their data included. The machine's counts
        everything: the database server, and anything else running.
        """
        timed = sum(r.seconds for r in self.rounds)
        wall = sum(r.wall for r in self.rounds)
        return (
            100 * sum(r.server_cpu for r in self.rounds) / timed,
            100 * sum(r.wrk_cpu for r in self.rounds) / wall,
            100 * sum(r.machine_cpu for r in self.rounds) / wall,
        )

    def problems(self) -> list[str]:
        """What makes this target's figures untrustworthy."""
        found = []
        runs = [r for r in (self.warmup, *self.rounds) if r is not None]
        if any(r.exhausted for r in runs):
            found.append("wrk ran out of pre-signed requests (raise --max-rate)")
        if any(r.status_errors for r in runs):
            found.append(f"{sum(r.status_errors for r in runs)} non-2xx answers")
        if any(r.socket_errors for r in runs):
            found.append(f"{sum(r.socket_errors for r in runs)} socket errors/timeouts")
        if self.exit_code not in (None, 0):
            found.append(f"the server exited with {self.exit_code} on SIGTERM")
        if self.stored is not None and self.stored != sum(r.sent for r in runs):
            found.append(f"{self.stored:,} stored but {sum(r.sent for r in runs):,} sent")
        return found

    def stored_cell(self) -> str:
        """``stored = acked + in flight at wrk's stop``, for the measured rounds."""
        if self.stored is None:
            return "n/a (stores nothing)"
        assert self.warmup is not None
        stored = self.stored - self.warmup.sent
        acked = sum(r.acked for r in self.rounds)
        unanswered = sum(r.unanswered for r in self.rounds)
        mark = "✓" if stored == acked + unanswered and not self.problems() else "✗"
        return f"{mark} {stored:,} = {acked:,} + {unanswered}"


def ratio_to(target: Target, bare: Target) -> float:
    """Median over rounds of target req/s / bare req/s in the same round."""
    return statistics.median(
        t.rate / b.rate for t, b in zip(target.rounds, bare.rounds, strict=True)
    )


def verdict(target: Target, bare: Target) -> tuple[str, str]:
    """The target text and PASS/MISS for ``target``."""
    ratio = ratio_to(target, bare)
    if target.name == "sqlite":
        ok = ratio >= SQLITE_RATIO and target.p99_ms <= SQLITE_P99_MS
        text = f"≥ {SQLITE_RATIO}× bare, p99 ≤ {SQLITE_P99_MS:g} ms"
    else:
        ok = ratio >= POSTGRES_RATIO
        text = f"≥ {POSTGRES_RATIO}× bare"
    if target.problems():
        return text, "INVALID"
    return text, "PASS" if ok else "MISS"


def table(targets: Sequence[Target]) -> list[str]:
    """The results as a markdown table."""
    bare = targets[0]
    lines = [
        "| endpoint | req/s | p50 ms | p99 ms | × bare | target | result | stored = acked + "
        "in flight | mean commit batch | CPU % server / wrk / machine |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    for target in targets:
        if target.skipped:
            lines.append(
                f"| {target.label} | – | – | – | – | – | SKIPPED: {target.skipped} | | | |"
            )
            continue
        if target is bare:
            ratio, aim, result = "1.00", "baseline", "–"
        else:
            ratio = f"{ratio_to(target, bare):.2f}"
            aim, result = verdict(target, bare)
        commits = target.commits
        batch = f"{commits.reports / commits.batches:.1f}" if commits and commits.batches else "–"
        server_cpu, wrk_cpu, machine_cpu = target.cpu()
        lines.append(
            f"| {target.label} | {target.rate:,.0f} | {target.p50_ms:.1f} | {target.p99_ms:.1f} "
            f"| {ratio} | {aim} | {result} | {target.stored_cell()} | {batch} "
            f"| {server_cpu:.0f} / {wrk_cpu:.0f} / {machine_cpu:.0f} |"
        )
    return lines


def round_table(targets: Sequence[Target]) -> list[str]:
    """req/s of every round, to show the noise."""
    measured = [t for t in targets if not t.skipped]
    lines = [
        "| round | " + " | ".join(f"{t.name} req/s (p99 ms)" for t in measured) + " |",
        "| ---: |" + " ---: |" * len(measured),
    ]
    for i in range(len(measured[0].rounds)):
        cells = [f"{t.rounds[i].rate:,.0f} ({t.rounds[i].p99_us / 1000:.1f})" for t in measured]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return lines


def cpu_idle(seconds: float = 1.0) -> float:
    """Percentage of CPU time idle machine-wide over ``seconds``."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return values[3] + values[4], sum(values)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 100 * (idle1 - idle0) / max(total1 - total0, 1)


def machine() -> list[str]:
    """Where and with what the benchmark ran."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    version_command = ["wrk", "--version"]
    wrk = subprocess.run(version_command, capture_output=True, text=True, check=False)  # noqa: S603
    wrk_version = (wrk.stdout or wrk.stderr).split("Copyright")[0].strip()
    return [
        f"- machine: {os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, {wrk_version}",
    ]


# --------------------------------------------------------------------------- docs


def refresh_docs(section: list[str]) -> None:
    """Write or replace the ``## Ingest`` section of docs/benchmarks.md, keeping the rest."""
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    body = "\n".join(section).rstrip() + "\n"
    pattern = re.compile(r"^## Ingest\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + body
    DOCS.write_text(text, encoding="utf-8")


READING: Final = """\
How to read it: every row is a real server process on loopback, driven by wrk with
pre-signed, distinct ~1 KB typed JSON uplinks. "× bare" compares a `tpas serve` row with
the bare endpoint (verify + parse, nothing stored, the same uvicorn/uvloop/httptools
stack) measured in the same run, round by round: it says what the service and durable
storage cost on top of the protocol work. Quote the ratios, not the absolute req/s and
latencies, which drift with the machine and with whatever else runs on it. The CPU column
tells the two apart: the bare endpoint is CPU-bound (its server near 100% of one core),
while a storage row whose server stays well below that is bound by commit latency (a
`synchronous = FULL` commit waits for an fsync, and with 32 connections the group commit
alternates between two halves of them, so the mean batch is about 16). A machine near
200% with server + wrk well below it had other processes competing, and that hurts the
storage rows more than the bare one: each commit waits for several wake-ups (writer
thread, database, event loop), each delayed when the cores are oversubscribed, so even
the ratios fall on a busy machine; compare runs made in similar conditions.
"stored = acked + in flight" counts the rows each database holds after SIGTERM: the 2xx
answers wrk counted plus the requests still in flight when wrk stopped, whose answers
were never read but which the server committed before it exited."""


# --------------------------------------------------------------------------- main


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: durations, load shape, where PostgreSQL is."""

    seconds: float
    rounds: int
    warmup: float
    connections: int
    threads: int
    max_rate: int
    postgres: str

    def data_sets(self) -> dict[str, int]:
        """How many distinct requests each wrk run may need at ``max_rate``."""
        sets = {"warmup": int(self.max_rate * self.warmup)}
        sets.update({f"round{i}": int(self.max_rate * self.seconds) for i in range(self.rounds)})
        return sets


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(plan: Plan, targets: Sequence[Target], key: str) -> float:
    """Start, warm up, measure and stop every target; returns the mean body size."""
    live = [t for t in targets if not t.skipped]
    with tempfile.TemporaryDirectory(prefix="tpas-bench-") as tmp, contextlib.ExitStack() as stack:
        directory = Path(tmp)
        sets = plan.data_sets()
        progress(f"signing {sum(sets.values()):,} distinct requests ...")
        data, body_size = generate(directory, sets, plan.threads, key)
        for target in live:
            progress(f"starting {target.name} and warming it up ...")
            if target.name == "bare":
                server = start_bare(directory, key)
            elif target.name == "sqlite":
                db = directory / "tpas.db"
                server = start_tpas("sqlite", directory, f"sqlite:///{db}", key)
                server.count_rows = str(db)
            else:
                url = stack.enter_context(postgres_database(plan.postgres))
                server = start_tpas("postgres", directory, url, key)
                server.count_rows = url
            # Stopped before its database is dropped (the stack unwinds in reverse).
            stack.callback(server.stop)
            target.server = server
            target.warmup = run_wrk(
                server, data["warmup"], plan.warmup, plan.connections, plan.threads
            )
        time.sleep(0.5)
        before = {t.name: commit_stats(t.server) for t in live if t.server and t.count_commits}
        for i in range(plan.rounds):
            for target in live[i % len(live) :] + live[: i % len(live)]:
                assert target.server is not None
                progress(f"round {i + 1}/{plan.rounds}: {target.name} ...")
                run = run_wrk(
                    target.server, data[f"round{i}"], plan.seconds, plan.connections, plan.threads
                )
                target.rounds.append(run)
                time.sleep(0.5)
        for target in live:
            assert target.server is not None
            if target.name in before:
                target.commits = commit_stats(target.server).minus(before[target.name])
            target.exit_code = target.server.stop()
            if target.server.count_rows is not None:
                target.stored = target.server.stored()
            if target.problems():
                progress(f"{target.name} log tail:\n{target.server.log_tail()}")
    return body_size


def describe(
    plan: Plan, targets: Sequence[Target], command: str, started: datetime, idle: float, body: float
) -> list[str]:
    """The "Ingest" section: table, conditions, per-round figures, how to read it."""
    total = sum(plan.data_sets().values())
    section = [
        "## Ingest",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC with:",
        "",
        "```",
        command,
        "```",
        "",
        *table(targets),
        "",
        *machine(),
        f"- wrk -t{plan.threads} -c{plan.connections}; {plan.rounds} round(s) of "
        f"{plan.seconds:g} s per server after a {plan.warmup:g} s warm-up, rounds alternating "
        "between servers; req/s, p50 and p99 are medians over rounds, × bare the median of "
        "same-round ratios",
        f"- the {os.cpu_count()} cores are shared by wrk, the server under test and the "
        f"database (CPU % is of one core); machine-wide CPU idle just before the run: {idle:.0f}%",
        f"- {total:,} distinct pre-signed typed JSON uplinks (mean body {body:,.0f} B, 1-2 "
        f"gateways, {DEVICES:,} devices); each wrk thread replays its own slice, and no request "
        "is sent twice to a server",
        "- freshness is off in the bench config (`max_time_drift = 0`) since the requests are "
        "signed before the run; token, AS_ID and LrnDevEui/LrnFPort are verified as always",
        "- SQLite: WAL, `synchronous = FULL`, group commit; PostgreSQL: the local server, "
        "synchronous commit, a fresh database dropped afterwards",
    ]
    if idle < IDLE_WARNING:
        section.append(
            f"- **other processes were using the machine** ({idle:.0f}% idle before the run, see "
            "the machine CPU column): absolute figures are low and noisy"
        )
    if plan.rounds > 1:
        section += ["", "Per round:", "", *round_table(targets)]
    return [*(_wrap(line) for line in section), "", READING]


def _wrap(line: str) -> str:
    """A bullet point wrapped to the width of the docs; anything else as it is."""
    if not line.startswith("- "):
        return line
    return textwrap.fill(line, width=90, subsequent_indent="  ", break_on_hyphens=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, help="measured seconds per round (5)")
    parser.add_argument("--rounds", type=int, help="measured rounds per server (3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per server (2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--max-rate",
        type=int,
        default=40_000,
        help="req/s to pre-sign requests for; no request repeats below it (40000)",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="PostgreSQL server URL without database (postgresql://postgres@127.0.0.1:5432)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--quick", action="store_true", help="one 2 s round after a 1 s warm-up; docs untouched"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not refresh docs/benchmarks.md")
    args = parser.parse_args(argv)
    plan = Plan(
        seconds=args.seconds or (2.0 if args.quick else 5.0),
        rounds=args.rounds or (1 if args.quick else 3),
        warmup=args.warmup or (1.0 if args.quick else 2.0),
        connections=args.connections,
        threads=args.threads,
        max_rate=args.max_rate,
        postgres=args.postgres,
    )
    command = "$ .venv/bin/python bench/ingest.py" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv)
    )
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    targets = [
        Target("bare", "bare ASGI: verify + parse"),
        Target("sqlite", "tpas serve, SQLite durable", count_commits=True),
        Target(
            "postgres",
            "tpas serve, PostgreSQL",
            count_commits=True,
            skipped="--no-postgres" if args.no_postgres else postgres_problem(plan.postgres),
        ),
    ]
    idle = cpu_idle()
    started = datetime.now(UTC)
    body = measure(plan, targets, secrets.token_hex(16))
    section = describe(plan, targets, command, started, idle, body)
    print("\n".join(section).replace("## Ingest", "# tpas ingest benchmark", 1))
    problems = [f"{t.name}: {p}" for t in targets for p in t.problems()]
    for problem in problems:
        print(f"WARNING {problem}")
    if idle < IDLE_WARNING:
        print(
            f"WARNING: only {idle:.0f}% of the CPU was idle before the run: other processes "
            "compete with the servers, so the figures are low and noisy."
        )
    if args.quick or args.no_docs:
        print(f"\n{DOCS.relative_to(REPO)} not touched (--quick or --no-docs)")
    else:
        refresh_docs(section)
        print(f"\n{DOCS.relative_to(REPO)}: Ingest section refreshed")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
