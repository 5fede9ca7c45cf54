"""The HTTP client for the network server's downlink endpoint (SPEC.md §4.1).

All inputs travel in the query; the body is empty, sent as
``application/x-www-form-urlencoded`` like Actility's examples. Network failures and
timeouts become :class:`~tpas.errors.NetworkError` (transient). The HTTP client is
injected, so tests can point it anywhere; the URL printed in errors never carries the
query (it holds the token).
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tpas.errors import NetworkError

__all__ = ["DownlinkClient", "NsResponse"]


@dataclass(frozen=True, slots=True)
class NsResponse:
    """The network server's answer, as received."""

    status: int
    body: str


class DownlinkClient:
    """Posts signed downlink queries; implements the dispatcher's transport port."""

    def __init__(self, client: httpx.AsyncClient | None = None) -> None:
        self._client = client or httpx.AsyncClient(
            headers={"User-Agent": "tpas"}, follow_redirects=False
        )

    async def submit(self, url: str, query: str, timeout: float) -> NsResponse:
        """POST ``url?query``; raise :class:`NetworkError` when no answer came."""
        try:
            response = await self._client.post(
                f"{url}?{query}",
                content=b"",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            raise NetworkError(f"no answer from {url} within {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach {url}: {type(exc).__name__}") from exc
        return NsResponse(response.status_code, response.text[:2000])

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
