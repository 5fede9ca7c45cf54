"""``POST /thingpark/{application}`` in the OpenAPI document.

The report endpoint is raw ASGI (:mod:`tpas.interfaces.http.reports`), so FastAPI never
sees it and would leave it out of ``/openapi.json``. :func:`document_report_endpoint`
adds a hand-written path item to the document FastAPI generates; requests still go
straight to the raw endpoint.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from tpas.protocol import DEFAULT_RECIPES, SIGNED_PARAMETERS

__all__ = ["ReportAnswer", "document_report_endpoint"]

PATH = "/thingpark/{application}"


class ReportAnswer(BaseModel):
    """The answer to a report once it is stored (or was already)."""

    status: Literal["stored", "duplicate"] = Field(
        description="`duplicate`: the same token or frame was stored before, under this id."
    )
    id: int | None = Field(description="The message id; absent while the report is spooled.")
    type: str = Field(description="The message type, as in `/api/messages`.")
    spooled: bool = Field(
        False,
        description="Present when the database was down and the report went to the local "
        "spool; it is stored once the database is back.",
    )


_PARAMETERS: dict[str, str] = {
    "LrnDevEui": "The DevEUI of the report, 16 hex digits; must match the body's `DevEUI`.",
    "LrnFPort": "The frame's FPort (decimal); must match the body's `FPort` when it has one.",
    "LrnInfos": "Opaque routing information from ThingPark; only used for the token.",
    "AS_ID": "The AS ID of the application's AS profile; another AS ID is refused (403).",
    "Time": "When ThingPark sent the report (ISO-8601 with offset); must lie within "
    "`max_time_drift` seconds of the server's clock.",
    "Token": "64 lower-case hex digits: SHA-256 over body elements, the five parameters "
    "above and the AS key (SPEC.md §3).",
}

# Status -> (description, reason codes in the error body).
_REFUSALS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: (
        "The body cannot be read, is not a report, or a parameter is repeated.",
        ("malformed_document", "forbidden_xml", "not_a_report", "repeated_parameter"),
    ),
    401: (
        "The request does not prove it comes from ThingPark: token, time or parameters.",
        (
            "missing_parameter",
            "token_mismatch",
            "malformed_time",
            "stale_time",
            "future_time",
            "body_query_mismatch",
        ),
    ),
    403: ("Signed for another AS ID.", ("bad_as_id",)),
    404: ("No application has this name.", ("unknown_application",)),
    413: ("The body is over the limit of {limit} bytes.", ("body_too_large",)),
    415: ("Neither JSON nor XML.", ("unsupported_content_type",)),
    503: (
        "Neither the database nor the local spool can take the report, or too many report "
        "requests are in progress (`overloaded`, with `Retry-After`).",
        ("storage_unavailable", "overloaded"),
    ),
}

_JSON_EXAMPLE = {
    "DevEUI_uplink": {
        "Time": "2026-01-01T00:00:00.000+00:00",
        "DevEUI": "0018B20000000B20",
        "FPort": 1,
        "FCntUp": 1,
        "payload_hex": "0102",
        "LrrRSSI": -80.0,
        "LrrSNR": 7.5,
        "CustomerID": "100000507",
    }
}
_XML_EXAMPLE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<DevEUI_uplink xmlns="http://uri.actility.com/lora">'
    "<Time>2026-01-01T00:00:00.000+00:00</Time><DevEUI>0018B20000000B20</DevEUI>"
    "<FPort>1</FPort><FCntUp>1</FCntUp><payload_hex>0102</payload_hex>"
    "<CustomerID>100000507</CustomerID></DevEUI_uplink>"
)


def _path_item(error_ref: str, answer_ref: str, max_body_bytes: int) -> dict[str, Any]:
    roots = sorted(DEFAULT_RECIPES)
    parameters: list[dict[str, Any]] = [
        {
            "name": "application",
            "in": "path",
            "required": True,
            "description": "The `name` of an `[[applications]]` entry of the configuration.",
            "schema": {"type": "string"},
        },
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": True,
            "description": _PARAMETERS[name],
            "schema": {"type": "string"},
        }
        for name in (*SIGNED_PARAMETERS, "Token")
    ]
    json_body = {
        "type": "object",
        "description": "One report under its type's root key, typed or untyped JSON.",
        "minProperties": 1,
        "maxProperties": 1,
        "properties": {root: {"type": "object"} for root in roots},
        "additionalProperties": False,
    }
    xml_body = {"type": "string", "description": "One report, its type as the root element."}
    responses: dict[str, Any] = {
        "200": {
            "description": "Stored (or already stored): ThingPark may forget the report.",
            "content": {"application/json": {"schema": {"$ref": answer_ref}}},
        }
    }
    for status, (text, reasons) in _REFUSALS.items():
        codes = ", ".join(f"`{r}`" for r in reasons)
        responses[str(status)] = {
            "description": f"{text.format(limit=max_body_bytes)} `error`: {codes}.",
            "content": {"application/json": {"schema": {"$ref": error_ref}}},
        }
    return {
        "post": {
            "tags": ["ThingPark"],
            "summary": "Receive a report from ThingPark",
            "description": (
                "Where the network server pushes reports (uplinks, notifications, locations, "
                "downlink outcomes, alarms). The token and query are verified before "
                "anything is stored; the answer is 200 only once the report is committed. "
                f"Report types: {', '.join(f'`{r}`' for r in roots)}. No bearer token: "
                "the report token authenticates the request."
            ),
            "operationId": "receive_report",
            "security": [],
            "parameters": parameters,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": json_body, "example": _JSON_EXAMPLE},
                    "application/xml": {"schema": xml_body, "example": _XML_EXAMPLE},
                    "text/xml": {"schema": xml_body},
                },
            },
            "responses": responses,
        }
    }


def document_report_endpoint(
    api: FastAPI, error_model: type[BaseModel], max_body_bytes: int
) -> None:
    """Make ``api.openapi()`` include the report endpoint, with ``error_model`` as the
    schema of its error answers."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            document = generate()  # FastAPI's document, cached on the app
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            template = "#/components/schemas/{model}"
            for model in (error_model, ReportAnswer):
                schemas.setdefault(model.__name__, model.model_json_schema(ref_template=template))
            document["paths"][PATH] = _path_item(
                template.format(model=error_model.__name__),
                template.format(model=ReportAnswer.__name__),
                max_body_bytes,
            )
            api.openapi_schema = document
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point
