"""``tpas demo``: tpas and a simulated ThingPark on one machine, with one command.

The demo writes a configuration in a fresh directory (SQLite there, a free port, a new
API token and AS key), starts ``tpas serve`` as a separate process, and plays ThingPark
against it: the simulator's devices post every kind of report (with faults), its network
server takes downlinks, and a few downlinks are sent through the API and followed to
``sent``. It shows where to look while it runs; Ctrl-C (or the end of ``--seconds``)
stops everything and prints a summary whose ``lost`` line counts the reports tpas
acknowledged that the API cannot find. The server is never imported here: the simulator
talks to it over HTTP only, as ThingPark would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tpas.cli.running import run_until_stopped
from tpas.errors import InputError, TpasError
from tpas.protocol import AsKey, BodyFormat
from tpas.simulator import (
    Faults,
    NetworkServer,
    NsFaults,
    Progress,
    Simulation,
    SimulationConfig,
    TpasApi,
    VirtualDevice,
)
from tpas.simulator.api_client import FINAL_STATES, lost_reports

__all__ = ["register"]

APPLICATION: Final = "demo"
AS_ID: Final = "TWA_100000507.1000.AS"
DEMO_FAULTS: Final = "duplicate=0.03,late=0.02,bad-token=0.02,out-of-window=0.02,clock-skew=5"
NS_FAULTS: Final = "busy=0.2,timeout=0.1,hold=3"
DOWNLINK_FPORT: Final = 10


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo``."""
    p = commands.add_parser(
        "demo",
        help="run tpas against a simulated ThingPark, on this machine",
        description="Start tpas serve with a generated configuration, play ThingPark against "
        "it (reports with faults, downlinks through the API), show where to look, and print "
        "a summary when stopped. Exit status 0 when nothing was lost, every fault got its "
        "expected answer and every downlink was sent.",
    )
    p.add_argument("--seconds", type=float, metavar="S", help="run time (default: until Ctrl-C)")
    p.add_argument("--devices", type=int, default=6, metavar="N", help="default: 6")
    p.add_argument(
        "--rate", type=float, default=20.0, metavar="R", help="reports per second (default: 20)"
    )
    p.add_argument("--downlinks", type=int, default=4, metavar="N", help="default: 4")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo directory (configuration, database, server log) afterwards",
    )
    p.set_defaults(run=run)


def _config_text(
    *, port: int, directory: Path, api_token: str, as_key: str, downlink_url: str
) -> str:
    text = json.dumps  # a JSON string is a valid TOML basic string
    return f"""# Written by tpas demo: a throwaway configuration.
[server]
host = "127.0.0.1"
port = {port}

[storage]
url = {text(f"sqlite:///{directory / 'tpas.db'}")}
spool_dir = {text(str(directory / "spool"))}

[api]
tokens = [{text(api_token)}]

[[applications]]
name = "{APPLICATION}"
as_id = "{AS_ID}"
as_keys = [{text(as_key)}]
max_time_drift = 120
downlink_url = {text(downlink_url)}

[downlinks]
retry_base = 0.5
retry_cap = 5
http_timeout = 2
poll_interval = 0.2
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class _Server:
    """``tpas serve`` in its own process group (Ctrl-C reaches only the demo, which then
    stops the server with SIGTERM once the API has been read)."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, config: Path, directory: Path) -> _Server:
        log_path = directory / "server.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "tpas", "serve", "--config", str(config),
                 "--log-level", "warning"],
                cwd=directory,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                process_group=0,
            )  # fmt: skip
        return cls(process, log_path)

    def alive(self) -> bool:
        return self.process.poll() is None

    async def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return await asyncio.to_thread(self.process.wait)

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Downlinks:
    """The demo's downlinks: their ids and last known states."""

    states: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requested: int = 0

    @property
    def sent(self) -> int:
        return sum(state == "sent" for state in self.states.values())

    @property
    def done(self) -> bool:
        return len(self.states) == self.requested and all(
            s in FINAL_STATES for s in self.states.values()
        )

    def line(self) -> str:
        return f"API downlinks {self.sent}/{self.requested} sent"


def _targets(devices: Sequence[VirtualDevice], count: int) -> list[VirtualDevice]:
    """Alternately a class A and a class C device, as far as the fleet has them."""
    a = [d for d in devices if d.device_class == "A"]
    c = [d for d in devices if d.device_class == "C"]
    order = [d for pair in zip(a, c, strict=False) for d in pair] + a[len(c) :] + c[len(a) :]
    return [order[i % len(order)] for i in range(count)]


async def _send_and_follow(
    api: TpasApi,
    devices: Sequence[VirtualDevice],
    state: _Downlinks,
    progress: Progress,
    stop: asyncio.Event,
) -> None:
    """Send the downlinks once traffic flows, then poll them until final or ``stop``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 1.5)
    if stop.is_set():
        return
    for number, device in enumerate(_targets(devices, state.requested), 1):
        try:
            queued = await api.send_downlink(
                APPLICATION,
                dev_eui=device.dev_eui,
                fport=DOWNLINK_FPORT,
                payload_hex=f"01{number:02X}",
            )
        except TpasError as exc:
            state.errors.append(str(exc))
            progress.note(f"downlink to {device.dev_eui}: {exc}")
            continue
        state.states[int(queued["id"])] = str(queued["status"])
        progress.note(
            f"downlink #{queued['id']} queued for {device.dev_eui} (class "
            f"{device.device_class}), correlation id {queued['correlation_id']}"
        )
    while not stop.is_set() and not state.done:
        await _poll(api, state, progress)
        if not state.done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    await _poll(api, state, progress)


async def _poll(api: TpasApi, state: _Downlinks, progress: Progress) -> None:
    for downlink_id, previous in list(state.states.items()):
        if previous in FINAL_STATES:
            continue
        try:
            status = str((await api.downlink(downlink_id))["status"])
        except TpasError as exc:
            state.errors.append(str(exc))
            continue
        if status != previous:
            state.states[downlink_id] = status
            progress.note(f"downlink #{downlink_id}: {previous} -> {status}")


def _banner(url: str, api_token: str, directory: Path, devices: Sequence[VirtualDevice]) -> str:
    auth = '-H "Authorization: Bearer $TPAS_API_TOKEN"'
    example = next((d for d in devices if d.device_class == "C"), devices[0])
    body = json.dumps(
        {"application": APPLICATION, "dev_eui": example.dev_eui, "fport": DOWNLINK_FPORT,
         "payload_hex": "01FF"}
    )  # fmt: skip
    return f"""tpas demo: tpas serve runs at {url} (SQLite in {directory})
  API docs:  {url}/docs
  metrics:   {url}/metrics

  # The token below was generated for this demo only and dies with it:
  export TPAS_API_TOKEN={api_token}
  curl -s {auth} {url}/api/devices
  curl -s {auth} '{url}/api/messages?type=uplink&limit=5'
  curl -s {auth} {url}/api/downlinks
  curl -s -X POST {auth} -H 'Content-Type: application/json' \\
       -d '{body}' {url}/api/downlinks

Ctrl-C stops the demo and prints its summary.
"""


@dataclass
class _Outcome:
    summary: dict[str, Any]
    acknowledged: int
    stored: int
    messages: int
    lost: int
    downlinks: _Downlinks
    server_exit: int | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _render(outcome: _Outcome) -> str:
    summary = outcome.summary
    refused = summary["refused"]
    reasons = ", ".join(f"{k} {v}" for k, v in refused.items())
    kinds = ", ".join(f"{k} {v}" for k, v in summary["reports"].items())
    network = summary.get("network_server", {})
    injected = ", ".join(f"{k} {v}" for k, v in network.get("injected", {}).items()) or "none"
    downlinks = outcome.downlinks
    lines = [
        "",
        "demo summary",
        f"  reports sent:        {sum(summary['reports'].values())} ({kinds}); "
        f"{summary['sent']} requests, duplicates included",
        f"  reports stored:      {outcome.stored} of {outcome.acknowledged} acknowledged "
        f"(the API lists {outcome.messages} messages, delivery reports included)",
        f"  refused as expected: {summary['refused_as_expected']}"
        + (f" ({reasons})" if reasons else ""),
        f"  unexpected answers:  {summary['unexpected']}",
        f"  downlinks:           {downlinks.requested} sent through the API, "
        f"{downlinks.sent} confirmed sent (DevEUI_downlink_Sent); network server "
        f"errors injected: {injected}",
        f"  lost: {outcome.lost}",
    ]
    lines += [f"  problem: {p}" for p in outcome.problems]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``tpas demo``: 0 when nothing was lost and everything got its expected answer."""
    if args.seconds is not None and not args.seconds > 0:
        raise InputError("--seconds: must be positive")
    if args.devices < 1:
        raise InputError("--devices: must be 1 or more")
    if not args.rate > 0:
        raise InputError("--rate: must be positive")
    if args.downlinks < 0:
        raise InputError("--downlinks: must be 0 or more")
    return run_until_stopped(lambda stop: _demo(args, stop))


async def _demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    directory = Path(tempfile.mkdtemp(prefix="tpas-demo-"))
    api_token = secrets.token_urlsafe(24)
    key_text = secrets.token_hex(16)
    as_key = AsKey(key_text)
    url = f"http://127.0.0.1:{_free_port()}"
    config = SimulationConfig(
        url=f"{url}/thingpark/{APPLICATION}",
        as_id=AS_ID,
        key=as_key,
        devices=args.devices,
        rate=args.rate,
        seconds=args.seconds,
        fmt=BodyFormat.JSON,
        faults=Faults.parse(DEMO_FAULTS),
        max_drift=120.0,
    )
    ns = NetworkServer(
        as_id=AS_ID, key=as_key, report_url=config.url, faults=NsFaults.parse(NS_FAULTS)
    )
    simulation = Simulation(config, network_server=ns)
    downlinks = _Downlinks(requested=args.downlinks)
    problems: list[str] = []
    played: tuple[int, int, int] | None = None
    server: _Server | None = None
    try:
        await ns.start()
        config_path = directory / "tpas.toml"
        config_path.write_text(
            _config_text(
                port=int(url.rpartition(":")[2]),
                directory=directory,
                api_token=api_token,
                as_key=key_text,
                downlink_url=ns.downlink_url(),
            ),
            encoding="utf-8",
        )
        config_path.chmod(0o600)
        server = _Server.start(config_path, directory)
        async with TpasApi(url, api_token) as api:
            await api.wait_ready(30.0, server.alive)
            print(_banner(url, api_token, directory, simulation.fleet.devices), flush=True)
            played = await _play(api, simulation, ns, downlinks, stop)
    except TpasError as exc:
        problems.append(str(exc))
    finally:
        server_exit = await server.stop() if server is not None else None
        await ns.stop()
    summary = simulation.summary()
    acknowledged, stored, messages = played or (0, 0, 0)
    lost = acknowledged - stored
    problems += _problems(summary, ns, downlinks, lost, server_exit)
    if server is not None and server_exit != 0:
        problems.append(f"server log (last lines):\n{server.tail()}")
    outcome = _Outcome(
        summary, acknowledged, stored, messages, lost, downlinks, server_exit, problems
    )
    print(_render(outcome), flush=True)
    if args.keep or problems:
        print(f"  kept {directory} (tpas.toml, tpas.db, server.log)", flush=True)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0 if outcome.ok else 1


async def _play(
    api: TpasApi,
    simulation: Simulation,
    ns: NetworkServer,
    downlinks: _Downlinks,
    stop: asyncio.Event,
) -> tuple[int, int, int]:
    """Run the traffic and the downlinks; then count what the API has kept:
    (acknowledged reports, of which stored, messages listed)."""
    progress = Progress(
        simulation.tally, sys.stderr, extra=lambda: f"{ns.stats.line()} · {downlinks.line()}"
    )
    shown = asyncio.Event()
    display = asyncio.create_task(progress.run(shown))
    followed = asyncio.Event()
    follow = asyncio.create_task(
        _send_and_follow(api, simulation.fleet.devices, downlinks, progress, followed)
    )
    try:
        await simulation.run(stop)
        # Traffic is over: class C deliveries and delivery reports may still be under way.
        await ns.drain(timeout=10.0)
    finally:
        followed.set()
        await follow
        shown.set()
        await display
    index = await api.message_index(APPLICATION)
    receipts = [*simulation.receipts, *ns.stats.receipts]
    acknowledged = len({(r.report_id, r.kind, r.dev_eui, r.time) for r in receipts})
    lost = lost_reports(receipts, index)
    return acknowledged, acknowledged - len(lost), len(index)


def _problems(
    summary: dict[str, Any],
    ns: NetworkServer,
    downlinks: _Downlinks,
    lost: int,
    server_exit: int | None,
) -> list[str]:
    problems = []
    if lost:
        problems.append(f"{lost} acknowledged reports are not in the database")
    if summary["unexpected"]:
        problems.append(f"{summary['unexpected']} answers were not the expected ones")
    if ns.stats.refused:
        problems.append(f"the network server refused downlinks: {dict(ns.stats.refused)}")
    if ns.stats.report_failures:
        failures = dict(ns.stats.report_failures)
        problems.append(f"delivery reports were not acknowledged: {failures}")
    problems += downlinks.errors
    if len(downlinks.states) < downlinks.requested:
        problems.append(f"only {len(downlinks.states)} of {downlinks.requested} downlinks queued")
    for downlink_id, status in sorted(downlinks.states.items()):
        if status != "sent":
            problems.append(f"downlink #{downlink_id} ended {status}, not sent")
    if server_exit is not None and server_exit != 0:
        problems.append(f"tpas serve exited with status {server_exit}")
    return problems
