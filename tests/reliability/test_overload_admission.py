"""Bounded admission (QUALITY.md REL-6): at most ``server.max_pending_reports`` report
requests are in ingest at once; one more gets an immediate 503 ``overloaded`` with
Retry-After, the places free up as soon as the admitted requests are answered, and a client
slow to send its body holds no place.

Requests are held in ingest deterministically: another connection holds the SQLite write
lock, so their commit waits.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.server.conftest import Server, free_port, signed, start_server, write_config
from tpas.testing import make_uplink

LIMIT = 2


@contextlib.contextmanager
def limited_server(directory: Path, limit: int) -> Iterator[Server]:
    """A SQLite server admitting at most ``limit`` report requests at once."""
    port = free_port()
    config = write_config(directory, port, f"sqlite:///{directory / 'tpas.db'}")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[server]\n", f"[server]\nmax_pending_reports = {limit}\n", 1),
        encoding="utf-8",
    )
    server = start_server(config, directory, port)
    try:
        yield server
    finally:
        server.stop()


def request_bytes(number: int) -> tuple[bytes, bytes]:
    """The head and body of a distinct signed uplink, as ThingPark would POST it."""
    report = signed(make_uplink(f"0A0B0C0D{number:08X}", fcnt_up=number))
    head = (
        f"POST /thingpark/farm?{report.query} HTTP/1.1\r\nHost: tpas\r\n"
        f"Content-Type: {report.content_type}\r\nContent-Length: {len(report.body)}\r\n\r\n"
    )
    return head.encode(), report.body


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers (lower-case names) and JSON body of one answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


def overloaded_count(server: Server) -> float:
    """``tpas_reports_refused_total{reason="overloaded"}`` from ``/metrics``."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    match = re.search(r'^tpas_reports_refused_total\{reason="overloaded"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def connect(server: Server) -> socket.socket:
    """A new TCP connection to ``server``."""
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_one_request_over_the_limit_is_refused_at_once_and_the_slots_free_up(
    tmp_path: Path,
) -> None:
    """With the limit reached by requests waiting for their commit, one more is answered 503
    overloaded with Retry-After in well under a second, and once the admitted ones are
    answered 200 a new request is admitted again."""
    with limited_server(tmp_path, LIMIT) as server, contextlib.ExitStack() as stack:
        # Another connection holds the database's write lock: commits wait for it.
        blocker = stack.enter_context(
            contextlib.closing(sqlite3.connect(tmp_path / "tpas.db", isolation_level=None))
        )
        blocker.execute("BEGIN IMMEDIATE")
        held = []
        for number in range(LIMIT):
            head, body = request_bytes(number)
            sock = stack.enter_context(connect(server))
            sock.sendall(head + body)
            held.append(sock)
        time.sleep(0.3)  # both read, verified and waiting for their commit

        extra = stack.enter_context(connect(server))
        head, body = request_bytes(LIMIT)
        started = time.monotonic()
        extra.sendall(head + body)
        status, headers, answer = read_answer(extra)
        waited = time.monotonic() - started
        blocker.execute("ROLLBACK")
        assert (status, answer.get("error")) == (503, "overloaded"), answer
        assert headers["retry-after"] == "1"
        assert waited < 0.5
        assert overloaded_count(server) == 1

        for sock in held:
            held_status, _, held_answer = read_answer(sock)
            assert (held_status, held_answer["status"]) == (200, "stored")

        again = server.post_report(signed(make_uplink("0A0B0C0DFFFFFFFF", fcnt_up=1)))
        assert again.status_code == 200, again.text
        assert overloaded_count(server) == 1


def test_a_client_slow_to_send_its_body_holds_no_place(tmp_path: Path) -> None:
    """Requests whose body has not arrived yet do not count against the limit: with more of
    them than the limit, a complete report is still admitted and stored."""
    with limited_server(tmp_path, LIMIT) as server, contextlib.ExitStack() as stack:
        slow = []
        for number in range(2 * LIMIT):
            head, body = request_bytes(number)
            sock = stack.enter_context(connect(server))
            sock.sendall(head)  # the body follows later
            slow.append((sock, body))
        time.sleep(0.3)
        answer = server.post_report(signed(make_uplink("0A0B0C0DFFFFFFFF", fcnt_up=1)))
        assert answer.status_code == 200, answer.text
        for sock, body in slow:  # one after the other, each within the limit
            sock.sendall(body)
            assert read_answer(sock)[0] == 200
        assert overloaded_count(server) == 0


def test_a_burst_below_the_default_limit_is_never_refused(tmp_path: Path) -> None:
    """With the default limit, 200 report requests in ingest at once are all admitted and
    answered 200: shedding is a last resort, not something an ordinary burst meets."""
    port = free_port()
    config = write_config(tmp_path, port, f"sqlite:///{tmp_path / 'tpas.db'}")
    server = start_server(config, tmp_path, port)
    try:
        with contextlib.ExitStack() as stack:
            blocker = stack.enter_context(
                contextlib.closing(sqlite3.connect(tmp_path / "tpas.db", isolation_level=None))
            )
            blocker.execute("BEGIN IMMEDIATE")
            held = []
            for number in range(200):
                head, body = request_bytes(number)
                sock = stack.enter_context(connect(server))
                sock.sendall(head + body)
                held.append(sock)
            time.sleep(0.5)  # all read and waiting for their commit
            blocker.execute("ROLLBACK")
            statuses = [read_answer(sock)[0] for sock in held]
        assert statuses == [200] * 200
        assert overloaded_count(server) == 0
    finally:
        server.stop()
