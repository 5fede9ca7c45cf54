"""A real ``tpas serve`` process on a loopback port, with its own SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tpas.protocol import AsKey, BodyFormat, Document
from tpas.testing import SignedReport, sign_report

AS_ID = "TWA_100000507.1111.AS"
KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
OLD_KEY = "46ab678cd45df4a4e4b375Eacd096acc"
API_TOKEN = "test-api-token-0123456789abcdef"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    directory: Path,
    port: int,
    storage_url: str,
    extra: str = "",
    *,
    spool_dir: Path | None = None,
) -> Path:
    """A tpas config for one application ``farm`` with a rotating pair of keys; the spool
    goes to ``directory/spool`` unless ``spool_dir`` says otherwise."""
    path = directory / "tpas.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}

[storage]
url = "{storage_url}"
spool_dir = "{spool_dir or directory / "spool"}"

[api]
tokens = ["{API_TOKEN}"]

[[applications]]
name = "farm"
as_id = "{AS_ID}"
as_keys = ["{KEY}", "{OLD_KEY}"]
max_time_drift = 120
{extra}
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Server:
    """A running server and how to talk to it."""

    process: subprocess.Popen[bytes]
    url: str
    directory: Path
    log_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=10
        )

    def post_report(self, signed: SignedReport, application: str = "farm") -> httpx.Response:
        """POST a signed report as ThingPark would."""
        return self.client.post(
            f"/thingpark/{application}?{signed.query}",
            content=signed.body,
            headers={"Content-Type": signed.content_type},
        )

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Signal the server and wait for it to exit; returns the exit code."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_server(
    config: Path, directory: Path, port: int, wait: float = 20, prefix: Sequence[str] = ()
) -> Server:
    """Start ``tpas serve`` (run by the ``prefix`` command, if any) and wait until
    ``/readyz`` answers."""
    log_path = directory / f"server-{port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "tpas", "serve", "--config", str(config)],
            cwd=directory,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tpas serve exited: {log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return Server(process, url, directory, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"tpas serve did not become ready: {log_path.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A server on SQLite in a temporary directory, stopped with SIGTERM afterwards."""
    port = free_port()
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}")
    running = start_server(config, tmp_path, port)
    yield running
    running.stop()


def signed(
    model: Document,
    fmt: BodyFormat = BodyFormat.JSON,
    *,
    key: str = KEY,
    time: datetime | str | None = None,
    overrides: dict[str, str] | None = None,
) -> SignedReport:
    """``model`` signed for the test application at ``time`` (default: now)."""
    return sign_report(
        model,
        key=AsKey(key),
        as_id=AS_ID,
        time=time or datetime.now(UTC),
        fmt=fmt,
        overrides=overrides,
    )


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a whole test module (tests must not depend on row counts)."""
    directory = tmp_path_factory.mktemp("shared")
    port = free_port()
    config = write_config(directory, port, f"sqlite:///{directory / 'tpas.db'}")
    running = start_server(config, directory, port)
    yield running
    running.stop()
