"""The read API (bearer token): devices, messages, export. OpenAPI at ``/openapi.json``.

No ``from __future__ import annotations`` here: FastAPI reads the route signatures at
runtime, and their dependencies are local to :func:`create_api`.

Errors answer ``{"error": <reason code>, "detail": <text>}`` like the report endpoint.
"""

import csv
import hmac
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import tpas
from tpas.bootstrap import Services
from tpas.errors import DocumentError, StorageUnavailable
from tpas.interfaces.http.downlinks import add_downlink_routes
from tpas.interfaces.http.openapi import document_report_endpoint
from tpas.protocol import BodyFormat, decode, encode, format_for_content_type, sniff_format
from tpas.storage.ports import ReportQuery, ReportStore, StoredReport

__all__ = ["create_api"]


class MessageType(StrEnum):
    """Report kinds as the API names them."""

    uplink = "uplink"
    join_request = "join_request"
    notification = "notification"
    location = "location"
    downlink_sent = "downlink_sent"
    downlink_rejected = "downlink_rejected"
    multicast_summary = "multicast_summary"
    device_alarm = "device_alarm"
    base_station_alarm = "base_station_alarm"


class ExportFormat(StrEnum):
    """Formats of ``/api/messages/export``."""

    ndjson = "ndjson"
    csv = "csv"


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="A stable reason code.")
    detail: str = Field(description="What went wrong, for people.")


class Message(BaseModel):
    """One stored report."""

    id: int
    application: str
    type: MessageType
    dev_eui: str | None = Field(description="Upper-case hex; absent for base-station alarms.")
    time: str | None = Field(description="The report's own Time, as ThingPark sent it.")
    received_at: datetime
    fport: int | None = None
    fcnt_up: int | None = None
    fcnt_dn: int | None = None
    payload_hex: str | None = None
    rssi: float | None = None
    snr: float | None = None
    spreading_factor: int | None = None
    lat: float | None = None
    lon: float | None = None
    correlation_id: str | None = None
    report: dict[str, Any] = Field(description="The whole report, typed, under its root key.")


class MessagePage(BaseModel):
    """A page of messages, newest first."""

    items: list[Message]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class Device(BaseModel):
    """A device seen in reports."""

    dev_eui: str
    application: str
    last_seen: datetime
    message_counts: dict[str, int]
    last_rssi: float | None = None
    last_snr: float | None = None


class DeviceList(BaseModel):
    """Every device."""

    items: list[Device]


class ApiError(Exception):
    """An error answered as ``{"error", "detail"}`` with a status."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token."},
    422: {"model": ErrorBody, "description": "A parameter is not valid."},
    503: {"model": ErrorBody, "description": "Storage cannot be read right now."},
}
# Ids are 64-bit database keys: a larger number is refused as a parameter rather than
# reaching the driver (which cannot bind it).
_MAX_ID = 2**63 - 1
_FIELDS = (
    "id", "application", "type", "dev_eui", "time", "received_at", "fport", "fcnt_up",
    "fcnt_dn", "payload_hex", "rssi", "snr", "spreading_factor", "lat", "lon",
    "correlation_id",
)  # fmt: skip


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def message_dict(row: StoredReport) -> dict[str, Any]:
    """A stored report in the API's message shape."""
    return {
        "id": row.id,
        "application": row.application,
        "type": row.kind,
        "dev_eui": row.dev_eui,
        "time": row.time,
        "received_at": _iso(row.received_at),
        "fport": row.fport,
        "fcnt_up": row.fcnt_up,
        "fcnt_dn": row.fcnt_dn,
        "payload_hex": row.payload_hex,
        "rssi": row.rssi,
        "snr": row.snr,
        "spreading_factor": row.spreading_factor,
        "lat": row.lat,
        "lon": row.lon,
        "correlation_id": row.correlation_id,
        "report": report_document(row.body, row.content_type),
    }


def report_document(body: bytes, content_type: str) -> Any:
    """The typed report (ThingPark's typed JSON keys) decoded from a stored body.

    The model is not stored beside the body (it would double what each commit writes):
    the body was verified and decoded on arrival, so it decodes the same way now.
    """
    media = content_type.partition(";")[0].strip().lower()
    fmt = format_for_content_type(media) or sniff_format(body)
    try:
        return msgspec.json.decode(encode(decode(body, fmt), BodyFormat.JSON))
    except DocumentError:
        return None  # only a body stored by a tpas that read more than this one does


def _json(data: Any) -> Response:
    # Rendered by the same encoder as the NDJSON export, so a message reads the same
    # everywhere; the routes' response models document the shape.
    return Response(msgspec.json.encode(data), media_type="application/json")


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def create_api(services: Services) -> FastAPI:
    """The FastAPI application serving ``/api`` and the OpenAPI document."""
    api = FastAPI(
        title="tpas",
        version=tpas.__version__,
        description="Read what ThingPark reported; see also POST /thingpark/{application}.",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    bearer = HTTPBearer(auto_error=False)
    tokens = [t.reveal().encode() for t in services.settings.api.tokens]
    store = services.store

    def refusal(credentials: HTTPAuthorizationCredentials | None) -> ApiError | None:
        """Why these credentials are refused, or None when they are accepted."""
        if credentials is None:
            return ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
        given = credentials.credentials.encode()
        if not any(hmac.compare_digest(given, t) for t in tokens):
            return ApiError(401, "unauthorized", "this bearer token is not accepted")
        return None

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if (refused := refusal(credentials)) is not None:
            raise refused

    @api.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status, headers=headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A body that is not JSON is refused before the dependencies run, authentication
        # included: an unauthenticated client must learn nothing about its request.
        if request.url.path.startswith("/api/"):
            refused = refusal(await bearer(request))
            if refused is not None:
                return await _api_error(request, refused)
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": "malformed_json", "detail": "the body is not JSON"}, 400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
        return JSONResponse(
            {"error": "invalid_parameter", "detail": f"{where}: {first.get('msg', 'invalid')}"},
            422,
        )

    # Starlette's class, not FastAPI's subclass: the router raises Starlette's own for an
    # unknown path (404) or method (405).
    @api.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, exc.status_code, headers=exc.headers
        )

    @api.exception_handler(StorageUnavailable)
    async def _unavailable(_: Request, exc: StorageUnavailable) -> JSONResponse:
        return JSONResponse({"error": exc.reason, "detail": "storage cannot be read now"}, 503)

    auth = [Depends(authorised)]

    def message_query(
        application: str | None = None,
        dev_eui: Annotated[str | None, Query(pattern="^[0-9A-Fa-f]{16}$")] = None,
        type: MessageType | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(pattern="^[0-9]{1,19}$")] = None,
    ) -> ReportQuery:
        if cursor and int(cursor) > _MAX_ID:
            raise ApiError(422, "invalid_parameter", "cursor: not a cursor this API issued")
        return ReportQuery(
            application=application,
            dev_eui=dev_eui.upper() if dev_eui else None,
            kind=type.value if type else None,
            since=_epoch(since),
            until=_epoch(until),
            before_id=int(cursor) if cursor else None,
            limit=limit,
        )

    @api.get("/api/devices", response_model=DeviceList, dependencies=auth, responses=_ERRORS)
    async def devices(application: str | None = None) -> Response:
        """Every device with at least one stored report."""
        rows = await store.devices(application)
        return _json(
            {
                "items": [
                    {
                        "dev_eui": d.dev_eui,
                        "application": d.application,
                        "last_seen": _iso(d.last_seen),
                        "message_counts": d.counts,
                        "last_rssi": d.last_rssi,
                        "last_snr": d.last_snr,
                    }
                    for d in rows
                ]
            }
        )

    @api.get(
        "/api/messages/export",
        dependencies=auth,
        responses={
            **_ERRORS,
            200: {"content": {"application/x-ndjson": {}, "text/csv": {}}},
        },
    )
    async def export(
        query: Annotated[ReportQuery, Depends(message_query)],
        format: ExportFormat = ExportFormat.ndjson,
    ) -> StreamingResponse:
        """Every message matching the filters (``limit`` is the page size), streamed."""
        if format is ExportFormat.csv:
            return StreamingResponse(_csv(store, query), media_type="text/csv")
        return StreamingResponse(_ndjson(store, query), media_type="application/x-ndjson")

    @api.get("/api/messages", response_model=MessagePage, dependencies=auth, responses=_ERRORS)
    async def messages(query: Annotated[ReportQuery, Depends(message_query)]) -> Response:
        """Stored reports, newest first, filtered; page with ``next_cursor``."""
        # One row more than the page says whether another page exists, so the last page
        # has no cursor even when the rows fill it exactly.
        rows = await store.query(replace(query, limit=query.limit + 1))
        page = rows[: query.limit]
        cursor = str(page[-1].id) if len(rows) > query.limit else None
        return _json({"items": [message_dict(r) for r in page], "next_cursor": cursor})

    @api.get(
        "/api/messages/{message_id}",
        response_model=Message,
        dependencies=auth,
        responses={**_ERRORS, 404: {"model": ErrorBody}},
    )
    async def message(message_id: Annotated[int, Path(ge=1, le=_MAX_ID)]) -> Response:
        """One stored report."""
        row = await store.get(message_id)
        if row is None:
            raise ApiError(404, "not_found", f"no message {message_id}")
        return _json(message_dict(row))

    @api.get(
        "/api/messages/{message_id}/body",
        dependencies=auth,
        responses={**_ERRORS, 404: {"model": ErrorBody}},
    )
    async def body(message_id: Annotated[int, Path(ge=1, le=_MAX_ID)]) -> Response:
        """The report's original body bytes, with the content type it arrived with."""
        found = await store.get_body(message_id)
        if found is None:
            raise ApiError(404, "not_found", f"no message {message_id}")
        data, content_type = found
        return Response(data, media_type=content_type or "application/octet-stream")

    document_report_endpoint(api, ErrorBody, services.settings.server.max_body_bytes)
    add_downlink_routes(api, services, auth, _ERRORS, ApiError, _json)
    return api


async def _pages(store: ReportStore, query: ReportQuery) -> AsyncIterator[list[StoredReport]]:
    before = query.before_id
    while True:
        rows = await store.query(replace(query, before_id=before))
        if not rows:
            return
        yield rows
        if len(rows) < query.limit:
            return
        before = rows[-1].id


async def _ndjson(store: ReportStore, query: ReportQuery) -> AsyncIterator[bytes]:
    encoder = msgspec.json.Encoder()
    async for rows in _pages(store, query):
        yield b"".join(encoder.encode(message_dict(r)) + b"\n" for r in rows)


async def _csv(store: ReportStore, query: ReportQuery) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_FIELDS)
    async for rows in _pages(store, query):
        for row in rows:
            data = message_dict(row)
            writer.writerow(["" if data[f] is None else data[f] for f in _FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()
