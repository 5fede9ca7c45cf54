"""The top-level ASGI application: a small dispatcher in front of the endpoints.

``/thingpark/...`` (the hot path), ``/healthz``, ``/readyz`` and ``/metrics`` are answered
by raw ASGI handlers; everything else (the read API, ``/openapi.json``, ``/docs``) goes to
the API application. The lifespan starts and stops the services.
"""

from __future__ import annotations

import logging

from tpas.bootstrap import Services
from tpas.interfaces.http import operations
from tpas.interfaces.http.api import create_api
from tpas.interfaces.http.reports import PREFIX, ReportEndpoint
from tpas.interfaces.http.types import Receive, Scope, Send

__all__ = ["TpasApp", "create_app"]

log = logging.getLogger("tpas.http")


class TpasApp:
    """Routes requests; owns the services' lifetime through the ASGI lifespan."""

    def __init__(self, services: Services) -> None:
        self.services = services
        server = services.settings.server
        self.reports = ReportEndpoint(
            services.ingest, services.metrics, server.max_body_bytes, server.max_pending_reports
        )
        self.api = create_api(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith(PREFIX):
                await self.reports(scope, receive, send)
            elif path == "/healthz":
                await operations.healthz(send)
            elif path == "/readyz":
                await operations.readyz(send, self.services.store, self.services.writer)
            elif path == "/metrics":
                await operations.metrics(send, self.services.metrics)
            else:
                await self.api(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.services.start()
                except Exception as exc:  # reported to the server, which exits
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.services.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(services: Services) -> TpasApp:
    """The ASGI application for ``services``."""
    return TpasApp(services)
