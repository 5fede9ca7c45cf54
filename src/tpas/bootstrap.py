"""The composition root: build every service from settings. Nothing is built at import."""

from __future__ import annotations

import os
import random
import socket
import time
from dataclasses import dataclass

from tpas.clients.thingpark import DownlinkClient
from tpas.config import Settings
from tpas.services.dispatcher import Dispatcher, DownlinkTarget
from tpas.services.ingest import Application, IngestService
from tpas.services.metrics import Gauge, Metrics
from tpas.services.outbox import Outbox
from tpas.services.retry import Backoff
from tpas.services.writer import ReportWriter
from tpas.storage import open_store
from tpas.storage.ports import Store
from tpas.storage.spool import FileSpool

__all__ = ["Services", "build"]


@dataclass(slots=True)
class Services:
    """Everything the interfaces need, wired together."""

    settings: Settings
    store: Store
    spool: FileSpool
    writer: ReportWriter
    ingest: IngestService
    outbox: Outbox
    dispatcher: Dispatcher
    client: DownlinkClient
    metrics: Metrics

    async def start(self) -> None:
        """Open storage and start background loops."""
        await self.store.open()
        self.writer.start()
        self.dispatcher.start()

    async def stop(self) -> None:
        """Finish the dispatcher round, commit what is pending, close everything."""
        await self.dispatcher.stop()
        await self.writer.stop()
        await self.client.close()
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
    downlinks = settings.downlinks
    outbox = Outbox(store, applications, metrics, default_lifetime=downlinks.default_lifetime)
    client = DownlinkClient()
    targets = {
        app.name: DownlinkTarget(app.downlink_url, app.as_id, app.as_keys[0])
        for app in settings.applications
    }
    dispatcher = Dispatcher(
        store,
        targets,
        client,
        metrics,
        clock=time.time,
        jitter=random.random,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        backoff=Backoff(downlinks.retry_base, downlinks.retry_cap),
        max_attempts=downlinks.max_attempts,
        http_timeout=downlinks.http_timeout,
        poll_interval=downlinks.poll_interval,
    )
    ingest = IngestService(applications, writer, metrics, outbox)
    return Services(settings, store, spool, writer, ingest, outbox, dispatcher, client, metrics)
