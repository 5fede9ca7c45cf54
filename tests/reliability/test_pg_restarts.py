"""PostgreSQL crashing again and again during one load, and tpas crashing while it spools
(QUALITY.md REL-2, REL-4).

tests/server/test_postgres.py covers one outage (stopped, and hung) and one process; here
the same process goes through repeated outages, and the spool of a process killed during
an outage is drained by the next one.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg

from tests.pg import private_server
from tests.reliability.faults import Outcome, Traffic, segments, tally, until
from tests.server.conftest import free_port, start_server, write_config

OUTAGES = 2


def test_repeated_postgres_crashes_then_a_tpas_crash_lose_no_acknowledged_report(
    tmp_path: Path,
) -> None:
    """PostgreSQL is stopped abruptly twice during one load and restarted: each time the
    same tpas process answers from the spool, then drains it by itself; a third outage
    ends with tpas killed (SIGKILL) with reports in its spool, and the next process stores
    them once PostgreSQL is back: every acknowledged report is stored exactly once."""
    spool = tmp_path / "spool"
    port = free_port()
    acknowledged: dict[str, str] = {}
    outages: list[str] = []
    while_down: list[Outcome] = []
    with private_server() as postgres:
        url = postgres.new_database()
        config = write_config(tmp_path, port, url)
        server = start_server(config, tmp_path, port)
        try:
            with Traffic(server, run=0x200, timeout=30) as traffic:
                traffic.wait_for("stored", 100, since=0)
                for _ in range(OUTAGES):
                    down = time.monotonic()
                    postgres.stop("immediate")
                    stopped = time.monotonic()
                    traffic.wait_for("spooled", 100, since=down)
                    time.sleep(1.5)
                    postgres.start()
                    up = time.monotonic()
                    while_down += traffic.between(stopped, up)
                    drained = until(lambda: not segments(spool), 30, "the spool is drained")
                    back = traffic.wait_for("stored", 50, since=up + drained)
                    outages.append(
                        f"down {up - down:.1f} s: {tally(traffic.between(down, up))}, drained "
                        f"{drained:.1f} s and storing again {drained + back:.1f} s after restart"
                    )
                down = time.monotonic()
                postgres.stop("immediate")
                traffic.wait_for("spooled", 100, since=down)
                killed = time.monotonic()
                server.stop(signal.SIGKILL)
            acknowledged.update(traffic.acknowledged)
            left = len(segments(spool))
            postgres.start()
            server = start_server(config, tmp_path, port)
            drained = until(lambda: not segments(spool), 30, "the spool is drained")
            with Traffic(server, run=0x201) as after:
                after.wait_for("stored", 50, since=0)
            acknowledged.update(after.acknowledged)
        finally:
            server.stop()
        with psycopg.connect(url) as conn:
            stored = [str(t) for (t,) in conn.execute("SELECT token FROM reports").fetchall()]
    print(  # noqa: T201 - figures for the reader (pytest -s)
        f"\n{'; '.join(outages)}\ntpas killed with {left} spool segments; the next process "
        f"drained them {drained:.1f} s after start; acknowledged {len(acknowledged)} "
        f"({sum(a == 'spooled' for a in acknowledged.values())} from the spool), stored "
        f"{len(stored)}"
    )
    assert set(tally(while_down)) == {"200 spooled"}
    # Every request answered before the kill got a 200; those in flight got no answer.
    assert {o.status for o in traffic.outcomes if o.sent + o.seconds < killed} == {200}
    assert left > 0
    assert len(stored) == len(set(stored)), "a report was stored twice"
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost"
