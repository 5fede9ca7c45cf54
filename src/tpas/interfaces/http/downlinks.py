"""``/api/downlinks``: queue a downlink, follow it to its delivery report, cancel it.

No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.
"""

import time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from tpas.bootstrap import Services
from tpas.errors import DownlinkParameterError
from tpas.protocol import DownlinkParams
from tpas.services.outbox import UnknownApplicationError, iso
from tpas.storage.ports import Downlink, DownlinkQuery, DownlinkStatus

__all__ = ["add_downlink_routes", "downlink_dict"]

_MAX_ID = 2**63 - 1
_HEX16 = "^[0-9A-Fa-f]{16}$"


class Status(StrEnum):
    """Downlink states (docs/downlinks.md)."""

    queued = "queued"
    submitted = "submitted"
    sent = "sent"
    failed = "failed"
    rejected = "rejected"
    expired = "expired"
    cancelled = "cancelled"


class DownlinkRequest(BaseModel):
    """A downlink to send (SPEC.md §4.2 formats)."""

    # The single-field formats are stated in the schema (``json_schema_extra``) for clients
    # and API test generators, but checked by DownlinkParams.validated(), so that every
    # refusal is the same 422 invalid_downlink_parameter naming the field.
    application: str = Field(description="A configured application name.")
    dev_eui: str = Field(
        description="16 hex digits.",
        examples=["0018B20000000B20"],
        json_schema_extra={"pattern": _HEX16},
    )
    fport: int | None = Field(
        None,
        description="1 to 224; required with a payload.",
        json_schema_extra={"minimum": 1, "maximum": 224},
    )
    payload_hex: str | None = Field(
        None,
        description="1 to 250 bytes in hex; required unless the queue is flushed.",
        json_schema_extra={"pattern": "^([0-9A-Fa-f]{2}){1,250}$"},
    )
    confirmed: bool = False
    flush_queue: bool = Field(False, description="Purge the device's queue first.")
    validity_time: str | int | None = Field(
        None, description="An ISO-8601 time, or a lifetime in seconds (at least 1)."
    )
    fcnt_dn: int | None = Field(
        None,
        description="Only for a payload the AS encrypted.",
        json_schema_extra={"minimum": 0},
    )
    correlation_id: str | None = Field(
        None,
        description="16 hex digits; generated when absent.",
        json_schema_extra={"pattern": _HEX16},
    )


class Queued(BaseModel):
    """The answer to a queued downlink."""

    id: int
    correlation_id: str
    status: Status


class AttemptOut(BaseModel):
    """One submission to the network server."""

    number: int
    at: str
    outcome: str = Field(description="accepted, transient or permanent")
    http_status: int | None
    message: str


class DownlinkOut(BaseModel):
    """A downlink and everything that happened to it."""

    id: int
    application: str
    dev_eui: str
    correlation_id: str
    status: Status
    fport: int | None
    payload_hex: str | None
    confirmed: bool
    flush_queue: bool
    validity_time: str | None
    fcnt_dn: int | None
    created_at: str
    expires_at: str | None
    submitted_at: str | None
    finished_at: str | None
    detail: str | None
    attempts: list[AttemptOut]
    delivery: dict[str, Any] | None = Field(
        description="The delivery report's facts: slot, causes decoded to text."
    )


class DownlinkPage(BaseModel):
    """Downlinks, newest first."""

    items: list[DownlinkOut]
    next_cursor: str | None


def downlink_dict(d: Downlink) -> dict[str, Any]:
    """A downlink in the API's shape."""
    return {
        "id": d.id,
        "application": d.application,
        "dev_eui": d.dev_eui,
        "correlation_id": d.correlation_id,
        "status": d.status,
        "fport": d.fport,
        "payload_hex": d.payload_hex,
        "confirmed": d.confirmed,
        "flush_queue": d.flush_queue,
        "validity_time": d.validity_time,
        "fcnt_dn": d.fcnt_dn,
        "created_at": iso(d.created_at),
        "expires_at": iso(d.expires_at),
        "submitted_at": iso(d.submitted_at),
        "finished_at": iso(d.finished_at),
        "detail": d.detail,
        "attempts": [
            {
                "number": a.number,
                "at": iso(a.at),
                "outcome": a.outcome,
                "http_status": a.http_status,
                "message": a.message,
            }
            for a in d.attempts
        ],
        "delivery": d.delivery,
    }


def add_downlink_routes(
    api: FastAPI,
    services: Services,
    auth: list[Any],
    errors: dict[int | str, dict[str, Any]],
    error: type[Exception],
    json: Any,
) -> None:
    """Register the downlink routes on ``api`` (``error`` builds an error answer)."""
    outbox = services.outbox

    @api.post(
        "/api/downlinks",
        status_code=202,
        response_model=Queued,
        dependencies=auth,
        responses={**errors, 200: {"model": Queued, "description": "Idempotent replay."},
                   400: errors[422], 404: errors[422]},
    )  # fmt: skip
    async def send(
        request: DownlinkRequest,
        idempotency_key: Annotated[
            str | None, Header(max_length=200, description="Same key, same downlink.")
        ] = None,
    ) -> Response:
        """Queue a downlink; it is committed before anything is sent."""
        params = DownlinkParams(
            dev_eui=request.dev_eui,
            fport=request.fport,
            payload_hex=request.payload_hex,
            confirmed=request.confirmed,
            flush_queue=request.flush_queue,
            validity_time=request.validity_time,
            fcnt_dn=request.fcnt_dn,
            correlation_id=request.correlation_id,
        )
        try:
            downlink, created = await outbox.enqueue(
                request.application, params, now=time.time(), idempotency_key=idempotency_key
            )
        except UnknownApplicationError as exc:
            raise error(404, exc.reason, str(exc)) from exc
        except DownlinkParameterError as exc:
            raise error(422, exc.reason, str(exc)) from exc
        if created:
            services.dispatcher.wake()
        answer = {"id": downlink.id, "correlation_id": downlink.correlation_id}
        response: Response = json({**answer, "status": downlink.status})
        response.status_code = 202 if created else 200
        return response

    @api.get("/api/downlinks", response_model=DownlinkPage, dependencies=auth, responses=errors)
    async def list_downlinks(
        application: str | None = None,
        dev_eui: Annotated[str | None, Query(pattern="^[0-9A-Fa-f]{16}$")] = None,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(pattern="^[0-9]{1,18}$")] = None,
    ) -> Response:
        """Downlinks, newest first, filtered."""
        rows = await outbox.list(
            DownlinkQuery(
                application=application,
                dev_eui=dev_eui.upper() if dev_eui else None,
                status=status.value if status else None,
                before_id=int(cursor) if cursor else None,
                limit=limit + 1,
            )
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = str(rows[-1].id) if more and rows else None
        result: Response = json(
            {"items": [downlink_dict(d) for d in rows], "next_cursor": next_cursor}
        )
        return result

    @api.get(
        "/api/downlinks/{downlink_id}",
        response_model=DownlinkOut,
        dependencies=auth,
        responses={**errors, 404: errors[422]},
    )
    async def show(downlink_id: Annotated[int, Path(ge=1, le=_MAX_ID)]) -> Response:
        """One downlink: status, every attempt, the delivery report's facts."""
        downlink = await outbox.get(downlink_id)
        if downlink is None:
            raise error(404, "not_found", f"no downlink {downlink_id}")
        result: Response = json(downlink_dict(downlink))
        return result

    @api.delete(
        "/api/downlinks/{downlink_id}",
        response_model=DownlinkOut,
        dependencies=auth,
        responses={**errors, 404: errors[422], 409: errors[422]},
    )
    async def cancel(downlink_id: Annotated[int, Path(ge=1, le=_MAX_ID)]) -> Response:
        """Cancel a downlink that has not been submitted yet (409 otherwise)."""
        found = await outbox.cancel(downlink_id, time.time())
        if found is None:
            raise error(404, "not_found", f"no downlink {downlink_id}")
        downlink, cancelled = found
        if not cancelled and downlink.status != DownlinkStatus.CANCELLED:
            raise error(409, "not_cancellable", f"the downlink is {downlink.status}")
        result: Response = json(downlink_dict(downlink))
        return result
