"""Small helpers to answer raw ASGI requests with JSON or text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tpas.interfaces.http.types import Send

__all__ = ["send_body", "send_json", "send_text"]

_encoder: Final = msgspec.json.Encoder()


async def send_body(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete response, with ``headers`` besides the content type and length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Send ``data`` as JSON."""
    await send_body(send, status, _encoder.encode(data), b"application/json", headers)


async def send_text(send: Send, status: int, text: str, content_type: bytes) -> None:
    """Send text."""
    await send_body(send, status, text.encode(), content_type)
