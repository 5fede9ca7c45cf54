"""MemoryStore's test seam: it can be made unavailable on purpose."""

from __future__ import annotations

import asyncio

import pytest

from tpas.errors import StorageUnavailable
from tpas.storage import MemoryStore, NewReport, ReportQuery


def test_unavailable_store_refuses_every_call() -> None:
    """With ``available`` False every call raises StorageUnavailable; restored, it works."""
    report = NewReport(
        application="farm",
        kind="uplink",
        dev_eui=None,
        time=None,
        time_ts=0.0,
        received_at=0.0,
        token="t",
        frame_key="f",
        body=b"{}",
        content_type="application/json",
    )

    async def main() -> None:
        store = MemoryStore()
        await store.open()
        store.available = False
        with pytest.raises(StorageUnavailable, match="unavailable"):
            await store.add_many([report])
        with pytest.raises(StorageUnavailable):
            await store.ping()
        with pytest.raises(StorageUnavailable):
            await store.query(ReportQuery())
        store.available = True
        assert [o.duplicate for o in await store.add_many([report])] == [False]
        await store.close()

    asyncio.run(main())
