"""Two ``tpas serve`` processes on one PostgreSQL share one outbox without double sends."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.pg import scratch_database, shared_dsn
from tests.server.conftest import AS_ID, KEY, Server, free_port, start_server, write_config
from tests.server.fake_ns import V2, FakeNetworkServer

DOWNLINKS = """
[downlinks]
retry_base = 0.05
retry_cap = 0.2
http_timeout = 10.0
poll_interval = 0.05
max_attempts = 20
"""


def _server(directory: Path, dsn: str, ns: FakeNetworkServer) -> Server:
    directory.mkdir()
    port = free_port()
    config = write_config(directory, port, dsn, f'downlink_url = "{ns.url}{V2}"\n{DOWNLINKS}')
    return start_server(config, directory, port)


def test_two_processes_submit_1000_downlinks_exactly_once(tmp_path: Path) -> None:
    """1,000 downlinks queued through two servers on one database all end submitted, and
    no two processes ever submit the same one: every send is a recorded attempt."""
    ns = FakeNetworkServer(AS_ID, KEY).start()
    try:
        with scratch_database(shared_dsn()) as dsn:
            first = _server(tmp_path / "a", dsn, ns)
            second = _server(tmp_path / "b", dsn, ns)
            try:
                servers = [first, second]

                def send(i: int) -> int:
                    body = {"application": "farm", "dev_eui": f"{i:016X}", "fport": 1,
                            "payload_hex": f"{i % 256:02X}"}  # fmt: skip
                    answer = servers[i % 2].client.post("/api/downlinks", json=body)
                    assert answer.status_code == 202, answer.text
                    downlink_id: int = answer.json()["id"]
                    return downlink_id

                with ThreadPoolExecutor(8) as pool:
                    ids = list(pool.map(send, range(1000)))
                assert len(set(ids)) == 1000
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    page = first.client.get(
                        "/api/downlinks", params={"status": "submitted", "limit": "1000"}
                    ).json()
                    if len(page["items"]) == 1000:
                        break
                    time.sleep(0.5)
                assert len(page["items"]) == 1000
            finally:
                first.stop()
                second.stop()
    finally:
        ns.stop()
    sends = Counter(r.params["CorrelationID"] for r in ns.received)
    assert len(sends) == 1000
    # Delivery is at least once: an attempt whose answer was lost (a timeout on a busy
    # machine) is recorded transient and made again. What must never happen is two
    # processes holding the same downlink: every send is one recorded attempt, and only
    # the last one was accepted.
    attempts = {d["correlation_id"]: d["attempts"] for d in page["items"]}
    for correlation_id, count in sends.items():
        outcomes = [a["outcome"] for a in attempts[correlation_id]]
        assert len(outcomes) == count, f"{correlation_id}: sent {count}x, attempts {outcomes}"
        assert outcomes[-1] == "accepted"
        assert all(o == "transient" for o in outcomes[:-1]), (correlation_id, outcomes)
    assert sum(sends.values()) - len(sends) <= 10, "more than 1% of downlinks sent again"
    assert all(r.token_ok for r in ns.received)
