"""The file spool: durable segments, safe under concurrent appends, robust to damage."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tpas.errors import StorageUnavailable
from tpas.storage.ports import NewReport
from tpas.storage.spool import FileSpool


def _report(i: int) -> NewReport:
    return NewReport(
        application="farm", kind="uplink", dev_eui=f"{i:016X}", time=None, time_ts=1.0,
        received_at=2.0, token=f"{i:064x}", frame_key=f"{i:040x}",
        body=bytes([i % 256]) * 100, content_type="application/json", rssi=-1.5,
    )  # fmt: skip


def test_segments_read_back_in_order(tmp_path: Path) -> None:
    """Appended batches come back whole, oldest segment first."""
    spool = FileSpool(tmp_path / "spool")
    spool.append([_report(1), _report(2)])
    spool.append([_report(3)])
    segments = spool.segments()
    assert [spool.read(s) for s in segments] == [[_report(1), _report(2)], [_report(3)]]
    spool.remove(segments[0])
    assert spool.segments() == segments[1:]


def test_concurrent_appends_never_share_a_segment(tmp_path: Path) -> None:
    """Appends from many threads at once each get their own readable segment."""
    spool = FileSpool(tmp_path / "spool")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: spool.append([_report(i)]), range(200)))
    segments = spool.segments()
    assert len(segments) == 200
    read = sorted(r.token for s in segments for r in spool.read(s))
    assert read == sorted(_report(i).token for i in range(200))


def test_a_damaged_segment_is_set_aside(tmp_path: Path) -> None:
    """A segment that cannot be decoded reads as empty and is kept as *.corrupt, so the
    other segments still replay."""
    spool = FileSpool(tmp_path / "spool")
    spool.append([_report(1)])
    spool.append([_report(2)])
    first, second = spool.segments()
    (tmp_path / "spool" / first).write_bytes(b"\xc1 not msgpack")
    assert spool.read(first) == []
    assert spool.segments() == [second]
    assert (tmp_path / "spool" / f"{first}.corrupt").exists()
    assert spool.read(second) == [_report(2)]


def test_an_unwritable_spool_is_storage_unavailable(tmp_path: Path) -> None:
    """A spool path below a regular file cannot take reports: StorageUnavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable):
        FileSpool(blocker / "spool").append([_report(1)])
