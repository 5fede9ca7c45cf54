"""``tpas demo``: tpas and a simulated ThingPark on one machine, with one command.

The demo writes a configuration in a fresh directory (SQLite there, a free port, a new
API token and AS key), starts ``tpas serve`` as a separate process, and plays ThingPark
against it: the simulator's devices post every kind of report (with faults), its network
server takes downlinks, and a few downlinks are sent through the API and followed to
``sent``. It shows where to look while it runs; Ctrl-C (or the end of ``--seconds``)
stops everything and prints a summary whose ``lost`` line counts the reports tpas
acknowledged that its API cannot find. The server is never imported here: the simulator
talks to it over HTTP only, as ThingPark would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tpas.cli.running import run_until_stopped
from tpas.cli.server_process import ServerProcess, demo_config, free_port
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
from tpas.simulator.api_client import lost_reports
from tpas.simulator.follower import COMMAND_FPORT, DownlinkFollower, pick_targets

__all__ = ["register"]

APPLICATION: Final = "demo"
AS_ID: Final = "TWA_100000507.1000.AS"
REPORT_FAULTS: Final = "duplicate=0.03,late=0.02,bad-token=0.02,out-of-window=0.02,clock-skew=5"
NS_FAULTS: Final = "busy=0.2,timeout=0.1,hold=3"
"""Transient errors only: every demo downlink must end ``sent``."""
SEED: Final = 58
"""Every run is the same show: with this seed the network server's first draws are
``ok, timeout, ok, ok, busy, ok, ok, timeout``, so the demo's downlinks meet one timeout
and one busy answer and none fails twice in a row."""
_DOWNLINKS_AFTER: Final = 1.5  # seconds of traffic before the downlinks are sent


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
    return run_until_stopped(lambda stop: _Demo(args).run(stop))


@dataclass
class _Count:
    """What the API kept of what tpas acknowledged."""

    acknowledged: int
    stored: int
    messages: int
    devices: int = 0
    """Simulated devices."""
    devices_with_uplinks: int = 0
    """Simulated devices the API lists with at least one stored uplink."""

    @property
    def lost(self) -> int:
        return self.acknowledged - self.stored


@dataclass
class _Demo:
    args: argparse.Namespace
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tpas-demo-")))
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    key_text: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def run(self, stop: asyncio.Event) -> int:
        key = AsKey(self.key_text)
        config = SimulationConfig(
            url=f"{self.url}/thingpark/{APPLICATION}",
            as_id=AS_ID,
            key=key,
            devices=self.args.devices,
            rate=self.args.rate,
            seconds=self.args.seconds,
            fmt=BodyFormat.JSON,
            faults=Faults.parse(REPORT_FAULTS),
            max_drift=120.0,
            seed=SEED,
        )
        ns = NetworkServer(
            as_id=AS_ID,
            key=key,
            report_url=config.url,
            faults=NsFaults.parse(NS_FAULTS),
            seed=SEED,
        )
        simulation = Simulation(config, network_server=ns)
        follower: DownlinkFollower | None = None
        count: _Count | None = None
        server: ServerProcess | None = None
        server_exit: int | None = None
        try:
            await ns.start()
            server = self._start_server(ns)
            async with TpasApi(self.url, self.api_token) as api:
                await api.wait_ready(30.0, server.alive)
                print(self._banner(simulation.fleet.devices), flush=True)
                follower = DownlinkFollower(api, APPLICATION)
                await self._play(simulation, ns, follower, stop)
                count = await self._count(api, simulation, ns)
        except TpasError as exc:
            self.problems.append(str(exc))
        finally:
            if server is not None:
                server_exit = await server.stop()
            await ns.stop()
        summary = simulation.summary()
        self._check(summary, ns, follower, count, server_exit)
        if server is not None and server_exit != 0:
            self.problems.append(f"server log, last lines:\n{server.tail()}")
        print(_render(summary, count, follower, server_exit, self.problems), flush=True)
        if self.args.keep or self.problems:
            print(f"  kept {self.directory} (tpas.toml, tpas.db, server.log)", flush=True)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)
        return 1 if self.problems else 0

    def _start_server(self, ns: NetworkServer) -> ServerProcess:
        path = self.directory / "tpas.toml"
        path.write_text(
            demo_config(
                port=self.port,
                directory=self.directory,
                application=APPLICATION,
                as_id=AS_ID,
                api_token=self.api_token,
                as_key=self.key_text,
                downlink_url=ns.downlink_url(),
            ),
            encoding="utf-8",
        )
        path.chmod(0o600)
        # The token goes to a file of its own (mode 600) so it is never printed.
        token_file = self.directory / "api-token"
        token_file.write_text(self.api_token, encoding="utf-8")
        token_file.chmod(0o600)
        return ServerProcess.start(path, self.directory)

    async def _play(
        self,
        simulation: Simulation,
        ns: NetworkServer,
        follower: DownlinkFollower,
        stop: asyncio.Event,
    ) -> None:
        """The traffic, with the downlinks sent and followed alongside."""
        progress = Progress(
            simulation.tally, sys.stderr, extra=lambda: f"{ns.stats.line()} · {follower.line()}"
        )
        follower.note = progress.note
        shown = asyncio.Event()
        display = asyncio.create_task(progress.run(shown))
        traffic_over = asyncio.Event()
        downlinks = asyncio.create_task(
            self._downlinks(follower, simulation.fleet.devices, traffic_over)
        )
        try:
            await simulation.run(stop)
            # Class C deliveries and delivery reports may still be under way.
            await ns.drain(timeout=10.0)
        finally:
            traffic_over.set()
            await downlinks
            shown.set()
            await display

    async def _downlinks(
        self, follower: DownlinkFollower, devices: Sequence[VirtualDevice], over: asyncio.Event
    ) -> None:
        try:
            await asyncio.wait_for(over.wait(), _DOWNLINKS_AFTER)
        except TimeoutError:
            await follower.send(pick_targets(devices, self.args.downlinks))
            await follower.follow(over)

    async def _count(self, api: TpasApi, simulation: Simulation, ns: NetworkServer) -> _Count:
        """Every acknowledged report looked up through the API (by id; see lost_reports)."""
        index = await api.message_index(APPLICATION)
        receipts = [*simulation.receipts, *ns.stats.receipts]
        lost = lost_reports(receipts, index)
        acknowledged = len(set(receipts))
        simulated = {d.dev_eui.upper() for d in simulation.fleet.devices}
        seen = {
            d["dev_eui"]
            for d in await api.devices(APPLICATION)
            if d.get("message_counts", {}).get("uplink", 0) > 0
        }
        return _Count(
            acknowledged,
            acknowledged - len(lost),
            len(index),
            len(simulated),
            len(simulated & seen),
        )

    def _check(
        self,
        summary: dict[str, Any],
        ns: NetworkServer,
        follower: DownlinkFollower | None,
        count: _Count | None,
        server_exit: int | None,
    ) -> None:
        problems = self.problems
        if count is not None and count.lost:
            problems.append(f"{count.lost} acknowledged reports are not in the database")
        if count is not None and count.devices_with_uplinks < count.devices:
            missing = count.devices - count.devices_with_uplinks
            problems.append(f"{missing} simulated devices have no uplink in the API")
        if summary["unexpected"]:
            problems.append(f"{summary['unexpected']} answers were not the expected ones")
        if ns.stats.refused:
            problems.append(f"the network server refused downlinks: {dict(ns.stats.refused)}")
        if ns.stats.report_failures:
            failures = dict(ns.stats.report_failures)
            problems.append(f"delivery reports were not acknowledged: {failures}")
        if follower is not None:
            problems += follower.errors
            if follower.requested < self.args.downlinks:
                problems.append("the demo stopped before its downlinks were sent")
            for downlink_id, status in sorted(follower.states.items()):
                if status != "sent":
                    problems.append(f"downlink #{downlink_id} ended {status}, not sent")
        if server_exit not in (0, None):
            problems.append(f"tpas serve exited with status {server_exit}")

    def _banner(self, devices: Sequence[VirtualDevice]) -> str:
        url = self.url
        auth = '-H "Authorization: Bearer $TPAS_API_TOKEN"'
        example = next((d for d in devices if d.device_class == "C"), devices[0])
        body = json.dumps(
            {"application": APPLICATION, "dev_eui": example.dev_eui, "fport": COMMAND_FPORT,
             "payload_hex": "01FF"}
        )  # fmt: skip
        seconds = self.args.seconds
        until = f"after {seconds:g} s, or at Ctrl-C" if seconds else "at Ctrl-C"
        return f"""tpas demo: tpas serve runs at {url} (SQLite in {self.directory})
  API docs:  {url}/docs
  metrics:   {url}/metrics

  # The demo's own API token (generated for it; it dies with it):
  export TPAS_API_TOKEN=$(cat {self.directory / "api-token"})
  curl -s {auth} {url}/api/devices
  curl -s {auth} '{url}/api/messages?type=uplink&limit=5'
  curl -s {auth} {url}/api/downlinks
  curl -s -X POST {auth} -H 'Content-Type: application/json' \\
       -d '{body}' {url}/api/downlinks

The demo stops {until}, and prints its summary.
"""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _render(
    summary: dict[str, Any],
    count: _Count | None,
    follower: DownlinkFollower | None,
    server_exit: int | None,
    problems: list[str],
) -> str:
    refused = _counts(summary["refused"])
    injected = _counts(summary.get("network_server", {}).get("injected", {})) or "none"
    if count is None:
        stored, lost = "unknown (the API could not be read)", "unknown"
    else:
        stored = (
            f"{count.stored} of {count.acknowledged} acknowledged (the API lists "
            f"{count.messages} messages, delivery reports included)"
        )
        lost = str(count.lost)
    requested, sent = (follower.requested, follower.sent) if follower else (0, 0)
    stopped = {None: "not started", 0: "stopped cleanly (SIGTERM, exit 0)"}.get(
        server_exit, f"exit status {server_exit}"
    )
    lines = [
        "",
        "demo summary",
        f"  reports sent:        {sum(summary['reports'].values())} "
        f"({_counts(summary['reports']) or 'none'}); {summary['sent']} requests with the "
        "duplicates",
        f"  reports stored:      {stored}",
        f"  devices:             {count.devices_with_uplinks if count else '?'} of "
        f"{count.devices if count else '?'} simulated devices have uplinks in the API",
        f"  refused as expected: {summary['refused_as_expected']}"
        + (f" ({refused})" if refused else ""),
        f"  unexpected answers:  {summary['unexpected']}",
        f"  downlinks:           {requested} sent through the API, {sent} confirmed sent "
        f"(DevEUI_downlink_Sent); network-server errors injected: {injected}",
        f"  tpas serve:          {stopped}",
        f"  lost: {lost}",
    ]
    lines += [f"  problem: {p}" for p in problems]
    return "\n".join(lines)
