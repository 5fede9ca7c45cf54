"""Running the HTTP server: uvicorn with uvloop and httptools, structured logs.

SIGTERM and SIGINT stop accepting connections, let in-flight requests finish, then run
the ASGI lifespan shutdown, which commits the pending batch and closes storage
(QUALITY.md REL-3); the process then exits 0.
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
import time
from typing import Any

import uvicorn

from tpas.bootstrap import build
from tpas.config import Settings
from tpas.interfaces.connection import deadline_protocol
from tpas.interfaces.http import create_app

__all__ = ["JsonFormatter", "configure_logging", "serve"]

_SWITCH_INTERVAL = 0.0005


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception type)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            data["exc_type"] = record.exc_info[0].__name__
        return json.dumps(data, ensure_ascii=False)


def configure_logging(level: str = "info") -> None:
    """Send tpas's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def serve(settings: Settings, *, log_level: str = "info") -> int:
    """Build the services and serve until SIGTERM/SIGINT; the process exit code."""
    configure_logging(log_level)
    app = create_app(build(settings))
    server = settings.server
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        loop="uvloop",
        http=deadline_protocol(server.read_timeout),  # httptools, with a read deadline
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=log_level,
        ssl_certfile=server.tls_certfile,
        ssl_keyfile=server.tls_keyfile,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=5,
        server_header=False,
    )
    # The storage writer thread releases the GIL for every SQLite call and must get it
    # back promptly when its fsync returns; with the default 5 ms switch interval it can
    # wait that long behind the busy event loop at each step, and group commit stalls.
    sys.setswitchinterval(_SWITCH_INTERVAL)
    uv_server = uvicorn.Server(config)
    # Everything built so far (the app, its schemas, the imported modules) lives as long
    # as the process: out of the collector's sight, a full collection walks only what
    # requests allocate, instead of pausing every request for tens of milliseconds.
    gc.collect()
    gc.freeze()
    # uvicorn handles SIGTERM/SIGINT itself during serving, then re-raises the signal
    # into the handlers it found at start; with these in place, a stop it has already
    # completed gracefully ends the process with 0 instead of "killed by SIGTERM".
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    uv_server.run()
    return 0 if uv_server.started else 3
