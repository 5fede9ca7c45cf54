"""``tpas serve`` on PostgreSQL: end to end, kill -9, PostgreSQL outages, several processes.

The shared server (``TPAS_TEST_POSTGRES_DSN``, see :mod:`tests.pg`) gets a fresh database
for this module; the tests that stop PostgreSQL run a private cluster of their own.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import psycopg
import pytest

from tests.pg import PrivateServer, private_server, scratch_database, shared_dsn
from tests.server.conftest import Server, free_port, signed, start_server, write_config
from tests.server.load import Answer, Load
from tpas.protocol import BodyFormat, Document, decode, encode
from tpas.testing import SignedReport, make_uplink

FIXTURES = Path(__file__).parent.parent / "fixtures"
FORMATS = list(BodyFormat)


def _one_report_per_type() -> dict[str, Path]:
    chosen: dict[str, Path] = {}
    for path in sorted(FIXTURES.glob("*.json")):
        if "template" in path.name or path.name == "token_test_vectors.json":
            continue
        kind = decode(path.read_bytes()).kind
        if kind != "downlink":  # a downlink request is not a report
            chosen.setdefault(kind, path)
    return chosen


REPORT_TYPES = _one_report_per_type()

# While PostgreSQL is down no report may wait longer than this (QUALITY.md REL-6).
DOWN_LATENCY_LIMIT = 5.0


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL server, dropped after the module."""
    with scratch_database(shared_dsn()) as url:
        yield url


@pytest.fixture(scope="module")
def servers(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two ``tpas serve`` processes on the module's database, each with its own spool."""
    running: list[Server] = []
    try:
        for name in ("a", "b"):
            directory = tmp_path_factory.mktemp(name)
            port = free_port()
            running.append(start_server(write_config(directory, port, database), directory, port))
        yield running
    finally:
        for server in running:
            server.stop()


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivateServer]:
    """A private PostgreSQL cluster for the module's outage tests."""
    with private_server() as server:
        yield server


@pytest.fixture
def private_pg(private_cluster: PrivateServer) -> Iterator[PrivateServer]:
    """The private cluster, free to be stopped or frozen; running again afterwards."""
    yield private_cluster
    private_cluster.freeze(False)
    if not private_cluster.running:
        private_cluster.start()


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def _stored_tokens(url: str) -> list[str]:
    return [str(token) for (token,) in _rows(url, "SELECT token FROM reports")]


def _metric(server: Server, name: str) -> float:
    for line in server.client.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _until(condition: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def _unique(model: Document, salt: int) -> Document:
    moment = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(seconds=salt)
    return msgspec.structs.replace(model, time=moment.isoformat(timespec="milliseconds"))


# End to end on the shared server.


@pytest.mark.parametrize("fmt", FORMATS, ids=[f.value for f in FORMATS])
@pytest.mark.parametrize("kind", list(REPORT_TYPES), ids=list(REPORT_TYPES))
def test_every_report_type_is_stored_and_served_back(
    servers: list[Server], kind: str, fmt: BodyFormat
) -> None:
    """A report of each type in each format is stored on PostgreSQL, read back whole
    through the API, and stored once when the same request arrives again."""
    server = servers[0]
    salt = list(REPORT_TYPES).index(kind) * 10 + FORMATS.index(fmt)
    model = _unique(decode(REPORT_TYPES[kind].read_bytes()), salt)
    report = signed(model, fmt)
    first = server.post_report(report)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "stored"
    again = server.post_report(report)
    assert again.json() == {**first.json(), "status": "duplicate"}
    stored = server.client.get(f"/api/messages/{first.json()['id']}").json()
    assert stored["type"] == kind
    assert stored["report"] == msgspec.json.decode(encode(model, BodyFormat.JSON))
    assert server.client.get(f"/api/messages/{first.json()['id']}/body").content == report.body
    listed = server.client.get("/api/messages", params={"type": kind, "limit": "1000"}).json()
    assert [m["id"] for m in listed["items"]].count(first.json()["id"]) == 1


def test_kill_9_under_load_loses_no_acknowledged_report(database: str, tmp_path: Path) -> None:
    """After repeated kill -9 under concurrent load, every acknowledged report is in
    PostgreSQL exactly once."""
    port = free_port()
    config = write_config(tmp_path, port, database)
    acknowledged: set[str] = set()
    for run in range(2):
        server = start_server(config, tmp_path, port)
        with Load(server, run=0x100 + run) as load:
            load.wait_for(300)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait(10)
        server.client.close()
        acknowledged |= load.acknowledged
    stored = _stored_tokens(database)
    assert len(stored) == len(set(stored)), "a report was stored twice"
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost"
    assert len(acknowledged) >= 600


# Scale-out: two processes on one database.


def _twin_pairs(
    count: int, prefix: str, same_request: bool
) -> list[tuple[SignedReport, SignedReport]]:
    """Reports as delivered to the first and the second server: the same request twice,
    or the same frame signed again (another Time, another format: BLAST routing)."""
    now = datetime.now(UTC)
    pairs = []
    for i in range(count):
        model = make_uplink(f"{prefix}{i:08X}", fcnt_up=i)
        first = signed(model, time=now)
        second = (
            first
            if same_request
            else signed(model, BodyFormat.XML, time=now - timedelta(seconds=1))
        )
        pairs.append((first, second))
    return pairs


def _dev_eui_rows(url: str, prefix: str) -> int:
    [(count,)] = _rows(url, "SELECT count(*) FROM reports WHERE dev_eui LIKE %s", f"{prefix}%")
    assert isinstance(count, int)
    return count


DELIVERIES = [True, False]
DELIVERY_IDS = ["same-request", "same-frame"]


@pytest.mark.parametrize("same_request", DELIVERIES, ids=DELIVERY_IDS)
def test_a_report_delivered_to_two_processes_one_after_the_other_is_stored_once(
    servers: list[Server], database: str, same_request: bool
) -> None:
    """The second process answers 200 "duplicate" with the id the first one stored."""
    prefix = f"5E{int(same_request)}00000"
    for first, second in _twin_pairs(50, prefix, same_request):
        one = servers[0].post_report(first)
        two = servers[1].post_report(second)
        assert one.status_code == two.status_code == 200, (one.text, two.text)
        assert one.json()["status"] == "stored"
        assert two.json() == {**one.json(), "status": "duplicate"}
    assert _dev_eui_rows(database, prefix) == 50


@pytest.mark.parametrize("same_request", DELIVERIES, ids=DELIVERY_IDS)
def test_a_report_delivered_to_two_processes_at_once_is_stored_once(
    servers: list[Server], database: str, same_request: bool
) -> None:
    """Delivered to both processes concurrently, each report is stored once: one process
    answers "stored", the other "duplicate" with the same id."""
    prefix = f"CC{int(same_request)}00000"
    pairs = _twin_pairs(300, prefix, same_request)
    deliveries = [
        (server, report) for pair in pairs for server, report in zip(servers, pair, strict=True)
    ]
    # Adjacent deliveries are the same report to each server: they run side by side.
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda d: d[0].post_report(d[1]), deliveries))
    for one, two in zip(answers[::2], answers[1::2], strict=True):
        assert one.status_code == two.status_code == 200, (one.text, two.text)
        assert sorted([one.json()["status"], two.json()["status"]]) == ["duplicate", "stored"]
        assert one.json()["id"] == two.json()["id"] is not None
    assert _dev_eui_rows(database, prefix) == 300


def test_distinct_reports_spread_over_two_processes_are_all_stored(
    servers: list[Server], database: str
) -> None:
    """1,000 distinct reports sent round-robin to two processes become 1,000 rows."""
    prefix = "D1500000"
    reports = [signed(make_uplink(f"{prefix}{i:08X}", fcnt_up=i)) for i in range(1000)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda i: servers[i % 2].post_report(reports[i]), range(len(reports)))
        )
    assert {(a.status_code, a.json()["status"]) for a in answers} == {(200, "stored")}
    assert len({a.json()["id"] for a in answers}) == 1000
    assert _dev_eui_rows(database, prefix) == 1000


# PostgreSQL outages, on a private server.


def _max_latency(answers: list[Answer]) -> float:
    return max((a.seconds for a in answers), default=0.0)


def _check_stored(url: str, acknowledged: set[str]) -> None:
    stored = _stored_tokens(url)
    assert len(stored) == len(set(stored)), "a report was stored twice"
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged reports lost"


def test_postgres_stopped_mid_load_spools_then_drains_without_a_restart(
    private_pg: PrivateServer, tmp_path: Path
) -> None:
    """While PostgreSQL is down reports are acknowledged from the spool, fast; once it is
    back the spool drains by itself and every acknowledged report is stored once."""
    url = private_pg.new_database()
    port = free_port()
    server = start_server(write_config(tmp_path, port, url), tmp_path, port)
    spool = tmp_path / "spool"
    readiness: list[tuple[int, bool]] = []
    try:
        with Load(server, timeout=30) as load:
            load.wait_for(200)
            stopping = time.monotonic()
            private_pg.stop("immediate")
            down = time.monotonic()
            while time.monotonic() < down + 4:
                answer = server.client.get("/readyz")
                readiness.append((answer.status_code, answer.json()["spooling"]))
            segments = len(list(spool.glob("*.spool")))
            up = time.monotonic()
            private_pg.start()

            def drained() -> bool:
                ready = server.client.get("/readyz")
                return (
                    not list(spool.glob("*.spool"))
                    and ready.status_code == 200
                    and not ready.json()["spooling"]
                )

            _until(drained, 30, "the spool is drained and /readyz is 200")
            drained_at = time.monotonic()
            load.wait_for(len(load.acknowledged) + 200)
        spooled = _metric(server, "tpas_reports_spooled_total")
        replayed = _metric(server, "tpas_reports_replayed_total")
    finally:
        server.stop()
    while_down = load.sent_between(down, up)
    latency = _max_latency(load.pending_between(stopping, up))
    print(  # noqa: T201 - figures for the reader (pytest -s)
        f"\nPostgreSQL down {up - stopping:.1f} s: {len(while_down)} reports sent, "
        f"{sum(a.spooled for a in while_down)} acknowledged from the spool, longest wait "
        f"{latency:.2f} s; {segments} spool segments; drained {drained_at - up:.1f} s after "
        f"the restart; spooled {spooled:.0f}, replayed {replayed:.0f}"
    )
    assert {a.status for a in load.answers} == {200}
    assert while_down
    assert all(a.spooled for a in while_down)
    assert segments > 0
    assert readiness
    assert all(ready == (503, True) for ready in readiness), readiness
    assert latency < DOWN_LATENCY_LIMIT
    assert spooled > 0
    assert replayed == spooled
    _check_stored(url, load.acknowledged)


def test_a_hung_postgres_delays_no_report_more_than_a_few_seconds(
    private_pg: PrivateServer, tmp_path: Path
) -> None:
    """When PostgreSQL hangs (connections open, no answers), commits are given up on and
    reports acknowledged from the spool; once it answers again the spool drains and
    every acknowledged report is stored once."""
    url = private_pg.new_database()
    port = free_port()
    server = start_server(write_config(tmp_path, port, url), tmp_path, port)
    spool = tmp_path / "spool"
    try:
        with Load(server, timeout=30) as load:
            load.wait_for(200)
            frozen = time.monotonic()
            private_pg.freeze()
            readiness: list[tuple[int, float]] = []
            while time.monotonic() < frozen + 5:
                asked = time.monotonic()
                status = server.client.get("/readyz", timeout=30).status_code
                readiness.append((status, time.monotonic() - asked))
            thawed = time.monotonic()
            private_pg.freeze(False)
            _until(lambda: not list(spool.glob("*.spool")), 30, "the spool is drained")
            load.wait_for(len(load.acknowledged) + 200)
        spooled = _metric(server, "tpas_reports_spooled_total")
        replayed = _metric(server, "tpas_reports_replayed_total")
    finally:
        server.stop()
    while_hung = load.sent_between(frozen, thawed)
    latency = _max_latency(load.pending_between(frozen, thawed))
    print(  # noqa: T201 - figures for the reader (pytest -s)
        f"\nPostgreSQL hung {thawed - frozen:.1f} s: {len(while_hung)} reports sent, "
        f"{sum(a.spooled for a in while_hung)} acknowledged from the spool, longest wait "
        f"{latency:.2f} s; /readyz answered {sorted({r[0] for r in readiness})} within "
        f"{max(r[1] for r in readiness):.2f} s; spooled {spooled:.0f}, replayed {replayed:.0f}"
    )
    assert {a.status for a in load.answers} == {200}
    assert sum(a.spooled for a in while_hung) > 0
    assert {status for status, _ in readiness} == {503}
    assert max(seconds for _, seconds in readiness) < DOWN_LATENCY_LIMIT
    assert latency < DOWN_LATENCY_LIMIT
    assert replayed == spooled > 0
    _check_stored(url, load.acknowledged)


def test_without_postgres_and_spool_reports_get_503_and_nothing_acknowledged_is_lost(
    private_pg: PrivateServer, tmp_path: Path
) -> None:
    """With PostgreSQL down and a spool that cannot be written, reports are refused with
    503 storage_unavailable, fast, never acknowledged; they are stored again once it is back."""
    url = private_pg.new_database()
    port = free_port()
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")  # the spool directory would have to be inside a file
    server = start_server(
        write_config(tmp_path, port, url, spool_dir=blocker / "spool"), tmp_path, port
    )
    try:
        with Load(server, timeout=30) as load:
            load.wait_for(200)
            stopping = time.monotonic()
            private_pg.stop("immediate")
            down = time.monotonic()
            time.sleep(4)
            metrics = server.client.get("/metrics")
            up = time.monotonic()
            private_pg.start()
            _until(
                lambda: any(a.status == 200 for a in load.sent_between(up, float("inf"))),
                20,
                "reports are stored again",
            )
            recovered = time.monotonic()
        refused = _metric(server, 'tpas_reports_refused_total{reason="storage_unavailable"}')
    finally:
        server.stop()
    while_down = load.sent_between(down, up)
    latency = _max_latency(load.pending_between(stopping, up))
    print(  # noqa: T201 - figures for the reader (pytest -s)
        f"\nPostgreSQL down {up - stopping:.1f} s, spool unusable: {len(while_down)} reports "
        f"sent, longest wait {latency:.2f} s, {refused:.0f} refused in all; stored again "
        f"{recovered - up:.1f} s after the restart"
    )
    assert while_down
    assert {(a.status, a.error) for a in while_down} == {(503, "storage_unavailable")}
    assert latency < DOWN_LATENCY_LIMIT
    assert metrics.status_code == 200
    assert refused >= len(while_down)
    _check_stored(url, load.acknowledged)
