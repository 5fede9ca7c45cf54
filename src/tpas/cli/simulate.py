"""``tpas simulate``: play ThingPark's network server against an application server.

Virtual devices post signed reports (uplinks, locations, notifications, Join-Requests)
with the faults asked for, every answer is checked against the one expected, live
progress goes to stderr and a summary at the end (``--json``: as JSON on stdout). With
``--downlink-port``, the simulator also serves the network server's downlink endpoints
and confirms each downlink with a ``DevEUI_downlink_Sent`` report. Exit status 0 when
every answer was the expected one, 1 otherwise. docs/simulator.md has the details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from tpas.cli.inputs import add_key_option, load_keys
from tpas.cli.running import run_until_stopped
from tpas.errors import InputError
from tpas.protocol import BodyFormat
from tpas.simulator import (
    Faults,
    Mix,
    NetworkServer,
    NsFaults,
    Progress,
    Simulation,
    SimulationConfig,
    render_summary,
)
from tpas.simulator.traffic import DEFAULT_MIX

__all__ = ["register", "report_url"]


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulate``."""
    p = commands.add_parser(
        "simulate",
        help="play ThingPark: post reports from virtual devices, take downlinks",
        description="Post ThingPark reports from virtual devices to an application server "
        "and check every answer (docs/simulator.md). Exit status: 0 every answer was the "
        "expected one, 1 otherwise, 2 unusable options.",
    )
    p.add_argument(
        "--url",
        required=True,
        metavar="URL",
        help="the AS report URL, e.g. http://127.0.0.1:8080/thingpark/farm",
    )
    p.add_argument("--as-id", required=True, metavar="ID", help="the AS_ID to send")
    add_key_option(p, repeat=False)
    p.add_argument("--devices", type=int, default=10, metavar="N", help="default: 10")
    p.add_argument(
        "--rate", type=float, default=10.0, metavar="R", help="reports per second (default: 10)"
    )
    p.add_argument("--seconds", type=float, metavar="S", help="run time (default: until Ctrl-C)")
    p.add_argument(
        "--format",
        choices=[f.value for f in BodyFormat],
        default=BodyFormat.JSON.value,
        help="body format (default: json)",
    )
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"report kinds' weights ({DEFAULT_MIX})")
    p.add_argument(
        "--faults",
        default="",
        help="fractions of duplicate, late, bad-token, out-of-window, and clock-skew in "
        "seconds, e.g. duplicate=0.02,late=0.01,bad-token=0.01,clock-skew=30 (default: none)",
    )
    p.add_argument(
        "--max-drift",
        type=float,
        default=120.0,
        metavar="S",
        help="the server's Time window, to know what it must refuse (default: 120)",
    )
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="default: 10")
    p.add_argument(
        "--concurrency", type=int, default=64, metavar="N", help="requests in flight (64)"
    )
    p.add_argument("--seed", type=int, metavar="N", help="make the run reproducible")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument(
        "--downlink-port",
        type=int,
        metavar="P",
        help="also serve the network server's downlink endpoints on 127.0.0.1:P (0: any)",
    )
    p.add_argument(
        "--ns-faults",
        default="",
        help="downlink errors to inject: busy=F (115), refuse=F (114), timeout=F, hold=S",
    )
    p.add_argument(
        "--ns-max-deviation",
        type=float,
        default=10.0,
        metavar="S",
        help="downlink Time deviation allowed (default: 10; 0: unchecked)",
    )
    p.set_defaults(run=run)


def report_url(url: str) -> str:
    """Check the AS URL: http(s), a host, no query (the simulator writes it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise InputError("--url: expected http(s)://host[:port]/path without a query")
    return url


def _config(args: argparse.Namespace) -> SimulationConfig:
    (key,) = load_keys([args.key])
    if args.devices < 1:
        raise InputError("--devices: must be 1 or more")
    if not args.rate > 0:
        raise InputError("--rate: must be positive")
    if args.seconds is not None and not args.seconds > 0:
        raise InputError("--seconds: must be positive")
    if args.concurrency < 1:
        raise InputError("--concurrency: must be 1 or more")
    if not args.timeout > 0:
        raise InputError("--timeout: must be positive")
    return SimulationConfig(
        url=report_url(args.url),
        as_id=args.as_id,
        key=key,
        devices=args.devices,
        rate=args.rate,
        seconds=args.seconds,
        fmt=BodyFormat(args.format),
        mix=Mix.parse(args.mix),
        faults=Faults.parse(args.faults),
        max_drift=args.max_drift,
        timeout=args.timeout,
        concurrency=args.concurrency,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """``tpas simulate``: 0 when every answer was the expected one, 1 otherwise."""
    config = _config(args)
    ns_faults = NsFaults.parse(args.ns_faults)
    if args.downlink_port is not None and not 0 <= args.downlink_port <= 65535:
        raise InputError("--downlink-port: must be a TCP port (0-65535)")

    async def main(stop: asyncio.Event) -> int:
        ns: NetworkServer | None = None
        if args.downlink_port is not None:
            ns = NetworkServer(
                as_id=config.as_id,
                key=config.key,
                report_url=config.url,
                port=args.downlink_port,
                fmt=config.fmt,
                max_deviation=args.ns_max_deviation,
                faults=ns_faults,
                seed=config.seed,
                timeout=config.timeout,
            )
            await ns.start()
        try:
            simulation = await simulate(config, stop, ns)
        finally:
            if ns is not None:
                # Class C deliveries and delivery reports still under way.
                await ns.drain(timeout=config.timeout)
                await ns.stop()
        summary = simulation.summary()
        sys.stderr.write(render_summary(summary) + "\n")
        if args.json:
            print(json.dumps(summary, indent=2))
        return 0 if summary["ok"] else 1

    return run_until_stopped(main)


async def simulate(
    config: SimulationConfig, stop: asyncio.Event, ns: NetworkServer | None = None
) -> Simulation:
    """Run one simulation with live progress on stderr; the finished simulation."""
    simulation = Simulation(config, network_server=ns)
    classes = sum(d.device_class == "C" for d in simulation.fleet)
    until = f"for {config.seconds:g} s" if config.seconds else "until Ctrl-C"
    sys.stderr.write(
        f"simulating {config.devices} devices ({classes} class C) at {config.rate:g}/s "
        f"{until}: {config.url} ({config.fmt.value}; mix {config.mix}; "
        f"faults {config.faults})\n"
    )
    if ns is not None:
        sys.stderr.write(
            f"network server: downlink_url = {ns.downlink_url()} (v2: {ns.downlink_url(v2=True)})\n"
        )
    extra = ns.stats.line if ns is not None else None
    progress = Progress(simulation.tally, sys.stderr, extra=extra)
    shown = asyncio.Event()
    display = asyncio.create_task(progress.run(shown))
    try:
        await simulation.run(stop)
    finally:
        shown.set()
        await display
    return simulation
