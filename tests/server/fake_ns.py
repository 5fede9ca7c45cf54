"""A fake ThingPark network server for downlink tests: a real HTTP server on loopback.

It verifies every request with its own code (not tpas's signer): the token is recomputed
from the query as received, percent-decoded, in the order sent (SPEC.md §4.3). Each
request consumes the next scripted behaviour (default: accept). Accepted downlinks can be
answered with a signed ``DevEUI_downlink_Sent`` posted back to the application server,
as the real network server does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote

import httpx

V1 = "/thingpark/lrc/rest/downlink"
V2 = "/thingpark/lrc/rest/v2/downlink"


@dataclass(frozen=True)
class Behaviour:
    """What to answer: ``accept``, ``error`` (status + body) or ``timeout`` (sleep)."""

    kind: str = "accept"
    status: int = 200
    body: str = ""
    sleep: float = 0.0


ACCEPT = Behaviour()


def v1_error(message: str, status: int = 350) -> Behaviour:
    """A v1 error answer: ``<html><body>message</body></html>``."""
    return Behaviour("error", status, f"<html><body>{message}</body></html>")


def v2_error(code: int, message: str) -> Behaviour:
    """A v2 409 answer with a JSON code."""
    return Behaviour("error", 409, json.dumps({"code": code, "message": message}))


def timeout(seconds: float) -> Behaviour:
    """Answer only after ``seconds``."""
    return Behaviour("timeout", sleep=seconds)


@dataclass
class Received:
    """One request as the fake network server saw it."""

    path: str
    params: dict[str, str]
    token_ok: bool
    at: float
    answered: int


@dataclass
class FakeNetworkServer:
    """Start with :meth:`start`; ``script`` is consumed in order, then everything is accepted."""

    as_id: str
    key: str
    max_deviation: float = 60.0
    confirm: bool = False
    """Post a DevEUI_downlink_Sent to ``report_url`` for every accepted downlink."""
    report_url: str | None = None
    customer_id: str = "100000507"
    script: deque[Behaviour] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _fcnt: int = 0

    @property
    def url(self) -> str:
        """The base URL (append V1 or V2)."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def accepted(self) -> list[Received]:
        """Requests that were verified and accepted."""
        with self._lock:
            return [r for r in self.received if r.answered in (200, 202)]

    def verify(self, raw_query: str) -> tuple[bool, dict[str, str]]:
        """Recompute the token over the query as received (its own implementation)."""
        before, sep, token = raw_query.rpartition("&Token=")
        pairs = [p.split("=", 1) for p in before.split("&")] if before else []
        params = {name: unquote(value) for name, value in pairs}
        if not sep:
            return False, params
        hashed = "&".join(f"{name}={unquote(value)}" for name, value in pairs)
        expected = hashlib.sha256((hashed + self.key).encode()).hexdigest()
        params["Token"] = token
        return hmac.compare_digest(expected, token), params

    def _handle(self, path: str, raw_query: str) -> tuple[int, str, str]:
        ok, params = self.verify(raw_query)
        v2 = path == V2
        status, body = (202, "") if v2 else (200, "<html><body>Request queued by LRC</body></html>")
        moment = datetime.fromisoformat(params.get("Time", "1970-01-01T00:00:00+00:00"))
        skew = abs((datetime.now(UTC) - moment).total_seconds())
        if params.get("AS_ID") != self.as_id:
            status, body = (409, json.dumps({"code": 107, "message": "bad AS_ID"})) if v2 else (
                350, "<html><body>Security Check. bad AS_ID</body></html>")  # fmt: skip
        elif not ok:
            status, body = (409, json.dumps({"code": 111, "message": "bad token"})) if v2 else (
                350, "<html><body>Security Check. bad token</body></html>")  # fmt: skip
        elif skew > self.max_deviation:
            status, body = (350, "<html><body>Security Check. Invalid downlink frame "
                            "timestamp</body></html>")  # fmt: skip
        else:
            with self._lock:
                behaviour = self.script.popleft() if self.script else ACCEPT
            if behaviour.kind == "timeout":
                time.sleep(behaviour.sleep)
            elif behaviour.kind == "error":
                status, body = behaviour.status, behaviour.body
        with self._lock:
            self.received.append(Received(path, params, ok, time.time(), status))
        if status in (200, 202) and self.confirm and self.report_url is not None:
            threading.Thread(target=self._report, args=(params,), daemon=True).start()
        kind = "application/json" if v2 else "text/html"
        return status, body, kind

    def _report(self, params: dict[str, str]) -> None:
        """Post a signed DevEUI_downlink_Sent, as the network server does after sending."""
        time.sleep(0.05)
        with self._lock:
            self._fcnt += 1
            fcnt = self._fcnt
        dev_eui, fport = params["DevEUI"], params.get("FPort", "1")
        body = json.dumps({"DevEUI_downlink_Sent": {
            "Time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "DevEUI": dev_eui, "FPort": int(fport), "FCntDn": fcnt, "DeliveryStatus": 1,
            "DeliveryFailedCause1": "00", "DeliveryFailedCause2": "00",
            "CustomerID": self.customer_id, "TransmissionSlot": 1,
            "CorrelationID": params.get("CorrelationID", ""),
        }})  # fmt: skip
        signed = {
            "LrnDevEui": dev_eui,
            "LrnFPort": fport,
            "LrnInfos": "fake-ns",
            "AS_ID": self.as_id,
            "Time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        elements = f"{self.customer_id}{dev_eui}{fport}{fcnt}"
        hashed = "&".join(f"{k}={v}" for k, v in signed.items())
        token = hashlib.sha256((elements + hashed + self.key).encode()).hexdigest()
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in signed.items())
        assert self.report_url is not None
        # Kept until the application server takes it, as a report sent at the device's
        # next uplink would be (the server may be restarting when the downlink goes out).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = httpx.post(
                    f"{self.report_url}?{query}&Token={token}",
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=10,
                )
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            if answer.status_code == 200:
                return
            time.sleep(0.2)

    def start(self) -> FakeNetworkServer:
        """Listen on a free loopback port in a background thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                path, _, raw_query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, body, kind = fake._handle(path, raw_query)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a scripted timeout)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
