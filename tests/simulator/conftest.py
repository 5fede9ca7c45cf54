"""Fixtures for the simulator's tests: keys, a clock, a receiver, the real ``tpas``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest

from tests.server.conftest import Server, free_port, start_server, write_config
from tpas.protocol import AsKey
from tpas.simulator.http_server import LoopbackServer

AS_ID: Final = "TWA_100000507.1111.AS"
KEY_TEXT: Final = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"  # the server tests' first key
KEY: Final = AsKey(KEY_TEXT)
NOW: Final = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


@dataclass
class Request:
    """One request a :class:`Receiver` got."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k == wanted), None)


@dataclass
class Receiver:
    """A tiny ASGI application server: records every request, answers ``status``."""

    requests: list[Request] = field(default_factory=list)
    status: int = 204

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Record the request and answer ``status`` with an empty body."""
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        self.requests.append(
            Request(
                scope["method"],
                scope["path"],
                scope["query_string"].decode(),
                [(k.decode().lower(), v.decode()) for k, v in scope["headers"]],
                b"".join(chunks),
            )
        )
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def start_receiver(status: int = 204) -> tuple[Receiver, LoopbackServer]:
    """A receiver listening on a loopback port (stop the server afterwards)."""
    receiver = Receiver(status=status)
    server = LoopbackServer(receiver)
    await server.start()
    return receiver, server


def run_tpas(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tpas ARGS...`` and capture its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "tpas", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def tpas_server(tmp_path: Path) -> Iterator[Server]:
    """A real ``tpas serve`` on SQLite (application ``farm``), stopped afterwards."""
    port = free_port()
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}")
    running = start_server(config, tmp_path, port)
    yield running
    running.stop()
