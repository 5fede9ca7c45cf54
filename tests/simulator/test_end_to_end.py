"""``tpas simulate`` and ``tpas demo`` against a real ``tpas serve``, over real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests.server.conftest import (
    AS_ID,
    KEY,
    Server,
    free_port,
    start_server,
    write_config,
)
from tests.simulator.conftest import run_tpas

FAULTS: Final = "duplicate=0.05,late=0.05,bad-token=0.05,out-of-window=0.05,clock-skew=10"
EXPECTED: Final = {
    "duplicate": "2xx duplicate",
    "late": "2xx stored",
    "bad-token": "401 token_mismatch",
    "out-of-window": "401 future_time or 401 stale_time",
}


@pytest.fixture(scope="module")
def shared_tpas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One ``tpas serve`` (application ``farm``) for the module's simulate runs."""
    directory = tmp_path_factory.mktemp("simulate")
    port = free_port()
    config = write_config(directory, port, f"sqlite:///{directory / 'tpas.db'}")
    running = start_server(config, directory, port)
    yield running
    running.stop()


@pytest.mark.parametrize("fmt", [pytest.param(f, id=f) for f in ("json", "json-untyped", "xml")])
def test_simulate_gets_every_expected_answer(shared_tpas: Server, fmt: str) -> None:
    """Five seconds of simulated traffic with every fault: exit 0, nothing unexpected,
    every fault answered with its expected reason."""
    run = run_tpas(
        "simulate", "--url", f"{shared_tpas.url}/thingpark/farm", "--as-id", AS_ID,
        "--key", KEY, "--seconds", "5", "--rate", "40", "--devices", "8", "--seed", "11",
        "--format", fmt, "--faults", FAULTS, "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["ok"] is True
    assert summary["unexpected"] == 0
    assert summary["errors"] == {}
    assert set(summary["reports"]) == {"uplink", "location", "notification", "join_request"}
    for name, expected in EXPECTED.items():
        fault = summary["faults"][name]
        assert fault["sent"] > 0, name
        assert fault["as_expected"] == fault["sent"], name
        assert fault["expected"] == expected
    assert set(summary["refused"]) == {"token_mismatch", "stale_time", "future_time"}
    assert KEY not in run.stdout + run.stderr


def test_simulate_plays_the_network_server_for_tpas_downlinks(tmp_path: Path) -> None:
    """With --downlink-port, tpas's downlinks reach the simulator, which confirms them:
    the downlink ends ``sent`` and the run exits 0."""
    ns_port = free_port()
    port = free_port()
    downlink_url = f"http://127.0.0.1:{ns_port}/thingpark/lrc/rest/v2/downlink"
    extra = f'downlink_url = "{downlink_url}"\n\n[downlinks]\nretry_base = 0.2\npoll_interval = 0.1'
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}", extra)
    server = start_server(config, tmp_path, port)
    simulator = subprocess.Popen(
        [sys.executable, "-m", "tpas", "simulate", "--url", f"{server.url}/thingpark/farm",
         "--as-id", AS_ID, "--key", KEY, "--seconds", "8", "--rate", "20", "--devices", "4",
         "--downlink-port", str(ns_port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        status = _send_and_follow(server.client, ns_port, simulator)
        out, err = simulator.communicate(timeout=60)
    finally:
        if simulator.poll() is None:
            simulator.kill()
        server.stop()
    assert status == "sent", err
    assert simulator.returncode == 0, err
    summary = json.loads(out)
    network = summary["network_server"]
    assert network["accepted"] == network["confirmed"] == 1
    assert network["refused"] == {}


def _send_and_follow(
    client: httpx.Client, ns_port: int, simulator: subprocess.Popen[str]
) -> str | None:
    """Once the simulator listens, queue a downlink for a class A device (index 0) and
    follow it until a final state; the last status seen."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and simulator.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{ns_port}/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    answer = client.post(
        "/api/downlinks",
        json={"application": "farm", "dev_eui": "70B3D57ED0000000", "fport": 10,
              "payload_hex": "0102"},
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    downlink_id = answer.json()["id"]
    status = None
    while time.monotonic() < deadline:
        status = client.get(f"/api/downlinks/{downlink_id}").json()["status"]
        if status in ("sent", "failed", "rejected", "expired", "cancelled"):
            break
        time.sleep(0.1)
    return status


def test_simulate_refuses_bad_options_without_showing_the_key() -> None:
    """Unusable options exit 2 with a one-line reason, and the key never shows."""
    key = "00112233445566778899aabbccddeeff"
    run = run_tpas(
        "simulate", "--url", "ftp://example", "--as-id", AS_ID, "--key", key, "--seconds", "1",
    )  # fmt: skip
    assert run.returncode == 2
    assert "--url" in run.stderr
    assert key not in run.stdout + run.stderr


@pytest.mark.slow
def test_demo_runs_and_loses_nothing() -> None:
    """``tpas demo --seconds 20`` exits 0 and its summary says nothing was lost, every
    simulated device has uplinks in the read API, and every downlink was sent."""
    run = run_tpas("demo", "--seconds", "20", timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "  lost: 0\n" in run.stdout
    assert "4 sent through the API, 4 confirmed sent" in run.stdout
    assert "6 of 6 simulated devices have uplinks in the API" in run.stdout
    assert "export TPAS_API_TOKEN=" in run.stdout
    assert "problem:" not in run.stdout
