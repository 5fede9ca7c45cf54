"""The HTTP connection: uvicorn's httptools protocol with a deadline for reading requests.

uvicorn closes idle keep-alive connections, but a client that connects and then sends its
request head or body a byte at a time (slowloris) is never timed out, and httptools buffers
a request head of any size. Each such connection holds a socket, parser memory and, once
its head is in, an admitted report request; enough of them starve real traffic
(QUALITY.md SEC-11). So every request must arrive whole, head and body, within
``server.read_timeout`` seconds of its first byte (or of the connection, for the first
request), and its head may not exceed :data:`MAX_HEAD_BYTES`:

* a head still incomplete at the deadline is answered ``408`` and the connection closed;
* a body still incomplete at the deadline closes the connection (the application sees a
  disconnect, and a report cut short is never stored);
* a head over the limit is answered ``431`` and the connection closed.

The deadline ends when the request is read: the time the application takes to answer
does not count against the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "deadline_protocol"]

MAX_HEAD_BYTES: Final = 64 * 1024
"""Request line and headers together; far above anything ThingPark or the API sends."""

log = logging.getLogger("tpas.http")


def _refusal(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


_TIMEOUT: Final = _refusal(b"408 Request Timeout", b"request not received in time")
_TOO_LARGE: Final = _refusal(b"431 Request Header Fields Too Large", b"request head too large")


class DeadlineProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection whose requests must arrive within ``read_timeout`` seconds.

    Each connection notes when its current read began; one sweeper per server, every
    eighth of ``read_timeout`` (at most every second), cuts off those past the deadline.
    A timer per request would cost a timer handle created and cancelled for every report
    on the hot path; the sweep costs a pass over the open connections now and then. A
    late request is thus cut off between ``read_timeout`` and an eighth of it later.
    """

    read_timeout: ClassVar[float] = 10.0
    _open: ClassVar[set[DeadlineProtocol]] = set()
    _sweeper: ClassVar[asyncio.TimerHandle | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_since: float | None = None
        self._in_head = False
        self._in_body = False
        self._head_bytes = 0

    # The deadline ------------------------------------------------------------------------

    @classmethod
    def _sweep_every(cls) -> float:
        return min(1.0, max(0.05, cls.read_timeout / 8))

    @classmethod
    def _watch(cls, conn: DeadlineProtocol) -> None:
        cls._open.add(conn)
        if cls._sweeper is None:
            cls._sweeper = conn.loop.call_later(cls._sweep_every(), cls._sweep, conn.loop)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in list(cls._open):
            since = conn._reading_since
            if since is not None and now - since >= cls.read_timeout:
                conn._expired()
        # Idle servers keep no timer running: the next connection starts the sweeper again.
        cls._sweeper = loop.call_later(cls._sweep_every(), cls._sweep, loop) if cls._open else None

    def _expired(self) -> None:
        self._reading_since = None
        if self.transport.is_closing():
            return
        if not self._in_body:
            # Nothing handed to the application yet: say why, then hang up.
            self.transport.write(_TIMEOUT)
        log.info("closed a connection that did not send its request in time")
        self.transport.close()

    # Connection and parser callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends a byte is timed out too.
        self._reading_since = self.loop.time()
        type(self)._watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._reading_since = None
        type(self)._open.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:
            # Counted per chunk still inside a head: exact for a client that waits for each
            # answer, a slight over-count at worst for a pipelining one.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._reading_since = None
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._in_body, self._head_bytes = True, False, 0
        if self._reading_since is None:  # the first request's clock started at connect
            self._reading_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._reading_since = None
        super().on_message_complete()


def deadline_protocol(read_timeout: float) -> type[DeadlineProtocol]:
    """The protocol class to give ``uvicorn.Config(http=...)`` for this timeout; each call
    makes a class of its own, with its own connections and sweeper."""
    attributes = {"read_timeout": read_timeout, "_open": set(), "_sweeper": None}
    return type("DeadlineProtocol", (DeadlineProtocol,), attributes)
