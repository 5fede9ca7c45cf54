"""The bench baseline: a bare ASGI endpoint that verifies and parses reports, stores nothing.

Each ``POST`` is read in full, verified and decoded (``tpas.protocol.check_report``, the
same protocol work tpas serve does: AS_ID, LrnDevEui/LrnFPort against the body, SHA-256
token; freshness off, as in the bench's tpas config), then answered 200 with a
small JSON body. It runs on the same server stack as ``tpas serve``: uvicorn with uvloop,
httptools and no access log. ``bench/ingest.py`` starts it as::

    python bench/bare_app.py --port PORT --as-id AS_ID --key HEX
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import uvicorn

from tpas.errors import DocumentError
from tpas.protocol import (
    DEFAULT_RECIPES,
    AsKey,
    BodyFormat,
    check_report,
    format_for_content_type,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_encoder: Final = msgspec.json.Encoder()


async def _answer(send: Send, status: int, data: dict[str, Any]) -> None:
    body = _encoder.encode(data)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BareApp:
    """Verify + parse on every request; 200 when the report checks out, 4xx otherwise."""

    def __init__(self, as_id: str, keys: Sequence[AsKey]) -> None:
        self.as_id = as_id
        self.keys = tuple(keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "method_not_allowed"})
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        content_type = b""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
        fmt = format_for_content_type(content_type.decode("latin-1")) or BodyFormat.JSON
        query = scope["query_string"].decode("latin-1")
        try:
            checked = check_report(
                body,
                fmt,
                query,
                self.keys,
                as_id=self.as_id,
                now=datetime.now(UTC),
                max_drift=None,
                recipes=DEFAULT_RECIPES,
            )
        except DocumentError as exc:
            await _answer(send, 400, {"error": exc.reason})
            return
        if checked.model is None:
            await _answer(send, 401, {"error": str(checked.verdict.reason)})
            return
        await _answer(send, 200, {"status": "verified", "type": checked.model.kind})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--as-id", required=True)
    parser.add_argument("--key", required=True, help="the AS key, 32 hex digits")
    args = parser.parse_args(argv)
    app = BareApp(args.as_id, [AsKey(args.key)])
    # uvicorn re-raises SIGTERM into the handlers it found at start once it has stopped
    # gracefully; with these, that graceful stop exits 0 (as tpas.interfaces.server does).
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    # The settings tpas.interfaces.server.serve uses for the HTTP side.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main()
