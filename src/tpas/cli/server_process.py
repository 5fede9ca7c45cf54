"""``tpas serve`` as a child process, with a throwaway configuration (for ``tpas demo``).

The child runs in its own process group: Ctrl-C in the terminal reaches only the parent,
which reads the API one last time and then stops the server with SIGTERM (a graceful
stop: in-flight requests and the pending commit finish first).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerProcess", "demo_config", "free_port"]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo_config(
    *,
    port: int,
    directory: Path,
    application: str,
    as_id: str,
    api_token: str,
    as_key: str,
    downlink_url: str,
) -> str:
    """A configuration for one application, SQLite and spool in ``directory``, and quick
    downlink retries (so injected network-server errors are retried within seconds)."""
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
name = {text(application)}
as_id = {text(as_id)}
as_keys = [{text(as_key)}]
max_time_drift = 120
downlink_url = {text(downlink_url)}

[downlinks]
retry_base = 0.5
retry_cap = 5
http_timeout = 2
poll_interval = 0.2
"""


@dataclass
class ServerProcess:
    """A running ``python -m tpas serve``; its output goes to ``log_path``."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, config: Path, directory: Path) -> ServerProcess:
        """Start the server with ``config``, working in ``directory``."""
        log_path = directory / "server.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "tpas", "serve", "--config", str(config),
                 "--log-level", "warning"],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                process_group=0,
            )  # fmt: skip
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the server still runs."""
        return self.process.poll() is None

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait (SIGKILL after ``timeout`` s); the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return await asyncio.to_thread(self.process.wait)

    def tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])
