"""The composition root: build every service from settings. Nothing is built at import."""

from __future__ import annotations

from dataclasses import dataclass

from tpas.config import Settings
from tpas.services.ingest import Application, IngestService
from tpas.services.metrics import Gauge, Metrics
from tpas.services.writer import ReportWriter
from tpas.storage import open_store
from tpas.storage.ports import ReportStore
from tpas.storage.spool import FileSpool

__all__ = ["Services", "build"]


@dataclass(slots=True)
class Services:
    """Everything the interfaces need, wired together."""

    settings: Settings
    store: ReportStore
    spool: FileSpool
    writer: ReportWriter
    ingest: IngestService
    metrics: Metrics

    async def start(self) -> None:
        """Open storage and start background loops."""
        await self.store.open()
        self.writer.start()

    async def stop(self) -> None:
        """Commit what is pending, stop loops, close storage."""
        await self.writer.stop()
        await self.store.close()


def build(settings: Settings) -> Services:
    """Wire the services for ``settings`` (nothing is opened until :meth:`Services.start`)."""
    metrics = Metrics()
    store = open_store(settings.storage.url.reveal())
    spool = FileSpool(settings.storage.spool_dir)
    writer = ReportWriter(store, spool, metrics, batch_max=settings.storage.batch_max)
    metrics.registry.add(
        Gauge(
            "tpas_spool_segments",
            "Spool segments waiting for replay.",
            lambda: float(len(spool.segments())),
        )
    )
    applications = {
        app.name: Application(
            app.name,
            app.as_id,
            app.as_keys,
            app.max_time_drift or None,
            app.recipes,
        )
        for app in settings.applications
    }
    ingest = IngestService(applications, writer, metrics)
    return Services(settings, store, spool, writer, ingest, metrics)
