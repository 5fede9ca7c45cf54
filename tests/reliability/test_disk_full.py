"""A full disk under the database, then under the spool too (QUALITY.md REL-1, REL-4).

The SQLite database and the spool each live on a small tmpfs of their own; a filler file
takes the last free byte of one, then of the other, and is deleted again, while the
server runs under load and is never restarted.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.reliability.faults import (
    Outcome,
    Traffic,
    fill,
    logged_exceptions,
    metric,
    segments,
    spool_files,
    sqlite_tokens,
    tally,
    tmpfs,
    until,
)
from tests.server.conftest import free_port, start_server, write_config

SIZE_KIB = 65536


def test_a_full_disk_never_gets_a_2xx_for_an_unstored_report(tmp_path: Path) -> None:
    """With the database's disk full, reports are acknowledged from the spool; with the
    spool's disk full too, they are refused with 503; once space is freed, the same process
    spools, then stores again and drains the spool, and every acknowledged report is in the
    database exactly once."""
    with (
        tmpfs(tmp_path / "db", SIZE_KIB) as db_disk,
        tmpfs(tmp_path / "spool", SIZE_KIB) as spool_disk,
    ):
        database = db_disk / "tpas.db"
        spool = spool_disk / "reports"
        port = free_port()
        config = write_config(tmp_path, port, f"sqlite:///{database}", spool_dir=spool)
        server = start_server(config, tmp_path, port)
        phases: dict[str, list[Outcome]] = {}
        try:
            with Traffic(server, run=2) as traffic:
                traffic.wait_for("stored", 100, since=0)

                db_filler = fill(db_disk)
                full = time.monotonic()
                # SQLite may still find room in its write-ahead log; it runs out soon. (Not
                # required here: when nothing gets spooled, the checks below say what happened.)
                filled = traffic.wait_for("spooled", 1, since=full, limit=10, required=False)
                time.sleep(2)
                phases["database disk full"] = traffic.between(
                    full + filled + 0.5, time.monotonic()
                )

                spool_filler = fill(spool_disk)
                both = time.monotonic()
                time.sleep(2)
                phases["both disks full"] = traffic.between(both + 0.5, time.monotonic())

                spool_filler.unlink()
                spool_back = time.monotonic()
                traffic.wait_for("spooled", 50, since=spool_back, limit=10, required=False)
                phases["spool disk freed"] = traffic.between(spool_back, time.monotonic())

                db_filler.unlink()
                db_back = time.monotonic()
                drained = until(lambda: not segments(spool), 20, "the spool is drained")
                traffic.wait_for("stored", 100, since=db_back + drained)
                phases["database disk freed"] = traffic.between(db_back)
            spooled = metric(server, "tpas_reports_spooled_total")
            replayed = metric(server, "tpas_reports_replayed_total")
        finally:
            code = server.stop(signal.SIGTERM)
        acknowledged = traffic.acknowledged
        stored = sqlite_tokens(database)
        leftovers = spool_files(spool)
    print()  # noqa: T201 - figures for the reader (pytest -s)
    for name, outcomes in phases.items():
        print(f"{name}: {tally(outcomes)}")  # noqa: T201
    print(  # noqa: T201
        f"database disk full after {filled:.1f} s of load; acknowledged {len(acknowledged)} "
        f"({sum(a == 'spooled' for a in acknowledged.values())} from the spool), stored "
        f"{len(stored)}, spooled {spooled:.0f}, replayed {replayed:.0f}; spool drained "
        f"{drained:.1f} s after space was freed; {len(leftovers)} files left in the spool "
        f"{leftovers[:3]}"
    )
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports are not in the database"
    assert len(stored) == len(set(stored)), "a report was stored twice"
    assert code == 0, server.log()
    assert set(tally(phases["database disk full"])) == {"200 spooled"}
    assert set(tally(phases["both disks full"])) == {"503 storage_unavailable"}
    assert "200 spooled" in tally(phases["spool disk freed"])
    assert set(tally(phases["spool disk freed"])) <= {"200 spooled", "503 storage_unavailable"}
    assert "200 stored" in tally(phases["database disk freed"])
    assert replayed == spooled > 0
    assert not leftovers, "the spool kept files after draining"
    assert not logged_exceptions(server)
