"""``tpas downlink send|list|show|cancel`` against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import (
    API_TOKEN,
    AS_ID,
    KEY,
    Server,
    free_port,
    start_server,
    write_config,
)
from tests.server.fake_ns import V1, FakeNetworkServer, timeout


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Server, FakeNetworkServer]]:
    """A server whose downlinks go to a fake network server."""
    ns = FakeNetworkServer(AS_ID, KEY).start()
    port = free_port()
    config = write_config(
        tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}", f'downlink_url = "{ns.url}{V1}"'
    )
    server = start_server(config, tmp_path, port)
    yield server, ns
    server.stop()
    ns.stop()


def tpas(
    server: Server, *args: str, token: str | None = API_TOKEN
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI against ``server``."""
    env = {k: v for k, v in os.environ.items() if k != "TPAS_API_TOKEN"}
    if token is not None:
        env["TPAS_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "tpas", "downlink", *args, "--url", server.url],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def test_send_show_and_list(setup: tuple[Server, FakeNetworkServer]) -> None:
    """send queues a downlink, show prints its attempts, list finds it; the token is
    never printed."""
    server, ns = setup
    sent = tpas(server, "send", "--application", "farm", "--dev-eui", "0018b20000000b20",
                "--fport", "2", "--payload", "0a0b", "--json")  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    queued = json.loads(sent.stdout)
    assert queued["status"] == "queued"
    for _ in range(100):
        shown = tpas(server, "show", str(queued["id"]), "--json")
        if json.loads(shown.stdout)["status"] == "submitted":
            break
    assert json.loads(shown.stdout)["status"] == "submitted"
    human = tpas(server, "show", str(queued["id"]))
    assert "attempt 1" in human.stdout
    assert "accepted" in human.stdout
    listed = tpas(server, "list", "--dev-eui", "0018B20000000B20")
    assert f"{queued['id']:>6}  submitted" in listed.stdout
    for run in (sent, shown, human, listed):
        assert API_TOKEN not in run.stdout + run.stderr
    assert ns.received[0].params["Payload"] == "0A0B"


def test_cancel_and_its_refusal(setup: tuple[Server, FakeNetworkServer]) -> None:
    """cancel cancels a downlink waiting behind a stuck one, and says why it cannot cancel
    a downlink already sent (exit status 2)."""
    server, ns = setup
    ns.script.extend([timeout(3.0)] * 2)
    args = ["send", "--application", "farm", "--dev-eui", "0018B20000000B20", "--fport", "2"]
    first = json.loads(tpas(server, *args, "--payload", "01", "--json").stdout)
    second = json.loads(tpas(server, *args, "--payload", "02", "--json").stdout)
    cancelled = tpas(server, "cancel", str(second["id"]))
    assert cancelled.returncode == 0
    assert "is cancelled" in cancelled.stdout
    for _ in range(200):
        if json.loads(tpas(server, "show", str(first["id"]), "--json").stdout)["status"] == (
            "submitted"
        ):
            break
    refused = tpas(server, "cancel", str(first["id"]))
    assert refused.returncode == 2
    assert "409 not_cancellable" in refused.stderr


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["list"], None, "no API token"),
        (["list"], "wrong-token-0123456789", "401 unauthorized"),
        (["send", "--application", "farm", "--dev-eui", "XYZ", "--fport", "1",
          "--payload", "00"], API_TOKEN, "422 invalid_downlink_parameter"),
        (["show", "999"], API_TOKEN, "404 not_found"),
    ],
    ids=["no-token", "wrong-token", "bad-dev-eui", "unknown-id"],
)  # fmt: skip
def test_errors_are_one_line_with_exit_2(
    setup: tuple[Server, FakeNetworkServer], args: list[str], token: str | None, message: str
) -> None:
    """Refusals and missing credentials are one clear line on stderr and exit status 2."""
    server, _ = setup
    run = tpas(server, *args, token=token)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert "wrong-token-0123456789" not in run.stderr
