"""A small client for tpas's HTTP API: readiness, downlinks, and what was stored.

The demo uses it to send downlinks and follow them, and to check that every report tpas
acknowledged is in its database (:func:`lost_reports`), over HTTP like any API user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Self

import httpx

from tpas.errors import TpasError
from tpas.simulator.sender import Receipt

__all__ = ["ApiError", "MessageIndex", "TpasApi", "lost_reports"]

FINAL_STATES: Final = frozenset({"sent", "failed", "rejected", "expired", "cancelled"})
_PAGE: Final = 1000


class ApiError(TpasError):
    """tpas's API did not answer as documented."""

    reason = "api_error"


@dataclass(slots=True)
class MessageIndex:
    """Every stored message of an application, by id and by (type, DevEUI, Time)."""

    ids: set[int] = field(default_factory=set)
    keys: set[tuple[str, str, str | None]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.ids)

    def holds(self, receipt: Receipt) -> bool:
        """Whether the acknowledged report is stored: by its id when the answer gave one
        (exact), else by its type, DevEUI and body Time (a spooled answer has no id)."""
        if receipt.report_id is not None:
            return receipt.report_id in self.ids
        return (receipt.kind, receipt.dev_eui.upper(), receipt.time) in self.keys


def lost_reports(receipts: Iterable[Receipt], index: MessageIndex) -> list[Receipt]:
    """The acknowledged reports that are not stored (each report once)."""
    seen: set[Receipt] = set()
    lost = []
    for receipt in receipts:
        if receipt not in seen:
            seen.add(receipt)
            if not index.holds(receipt):
                lost.append(receipt)
    return lost


class TpasApi:
    """tpas's API at ``base_url`` with a bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code >= 300:
            raise ApiError(f"{method} {path}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()

    async def wait_ready(self, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
        """Poll ``/readyz`` until it answers 200; :class:`ApiError` after ``timeout``
        seconds, or as soon as ``alive()`` says the server is gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive():
                raise ApiError("the server exited while starting")
            try:
                response = await self._client.get("/readyz", timeout=1.0)
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
        raise ApiError(f"{self.base_url}/readyz did not answer 200 within {timeout:g} s")

    async def send_downlink(self, application: str, **request: Any) -> dict[str, Any]:
        """``POST /api/downlinks``: ``{"id", "correlation_id", "status"}``."""
        body = {"application": application, **request}
        answer: dict[str, Any] = await self._json("POST", "/api/downlinks", json=body)
        return answer

    async def downlink(self, downlink_id: int) -> dict[str, Any]:
        """``GET /api/downlinks/{id}``."""
        answer: dict[str, Any] = await self._json("GET", f"/api/downlinks/{downlink_id}")
        return answer

    async def devices(self, application: str) -> list[dict[str, Any]]:
        """``GET /api/devices``."""
        answer = await self._json("GET", "/api/devices", params={"application": application})
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def message_index(self, application: str) -> MessageIndex:
        """Every stored message of ``application``, page by page."""
        index = MessageIndex()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"application": application, "limit": _PAGE}
            if cursor is not None:
                params["cursor"] = cursor
            page = await self._json("GET", "/api/messages", params=params)
            for item in page["items"]:
                index.ids.add(int(item["id"]))
                dev_eui = str(item.get("dev_eui") or "").upper()
                index.keys.add((str(item["type"]), dev_eui, item.get("time")))
            cursor = page.get("next_cursor")
            if not cursor:
                return index
