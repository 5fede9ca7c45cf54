"""Operations endpoints without authentication: liveness, readiness, metrics (REL-7)."""

from __future__ import annotations

from tpas.errors import StorageUnavailable
from tpas.interfaces.http.responses import send_json, send_text
from tpas.interfaces.http.types import Send
from tpas.services.metrics import Metrics
from tpas.services.writer import ReportWriter
from tpas.storage.ports import ReportStore

__all__ = ["healthz", "metrics", "readyz"]


async def healthz(send: Send) -> None:
    """The process is up and serving."""
    await send_json(send, 200, {"status": "ok"})


async def readyz(send: Send, store: ReportStore, writer: ReportWriter) -> None:
    """Storage answers (200), or reports are being spooled / refused (503)."""
    try:
        await store.ping()
    except StorageUnavailable as exc:
        await send_json(
            send, 503, {"status": "storage_unavailable", "detail": str(exc), "spooling": True}
        )
        return
    await send_json(send, 200, {"status": "ready", "spooling": writer.degraded})


async def metrics(send: Send, registry: Metrics) -> None:
    """Prometheus text exposition."""
    await send_text(
        send, 200, registry.registry.render(), b"text/plain; version=0.0.4; charset=utf-8"
    )
