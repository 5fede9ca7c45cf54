"""Downlink requests to the network server: validation and signing (SPEC.md §4).

All inputs travel as query parameters, in Actility's order, Token last::

    DevEUI, FPort, Payload, [FCntDn], [Confirmed=1], [FlushDownlinkQueue=1],
    [ValidityTime], AS_ID, Time, [CorrelationID], Token

``Token = lowercase_hex(SHA-256(queryString + AsKey))`` over every parameter before it,
joined with ``&``, values not percent-encoded (vectors DL-1, DL-2); the values are then
percent-encoded for the URL, so the ``+`` of a Time offset travels as ``%2B`` (SPEC.md
§9.11). The key is used as configured (DL-1's key has a capital letter). The same query
serves both endpoint generations (v1 ``/thingpark/lrc/rest/downlink`` and v2
``/thingpark/lrc/rest/v2/downlink``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final
from urllib.parse import quote

from tpas.errors import DownlinkParameterError
from tpas.protocol.keys import AsKey
from tpas.protocol.token import compute_token

__all__ = [
    "DOWNLINK_PATH_V1",
    "DOWNLINK_PATH_V2",
    "DownlinkParams",
    "SignedDownlink",
    "format_time",
    "sign_downlink",
]

DOWNLINK_PATH_V1: Final = "/thingpark/lrc/rest/downlink"
DOWNLINK_PATH_V2: Final = "/thingpark/lrc/rest/v2/downlink"

_HEX16 = re.compile(r"[0-9A-Fa-f]{16}")
_PAYLOAD = re.compile(r"(?:[0-9A-Fa-f]{2}){1,250}")
_AS_ID = re.compile(r"[0-9A-Za-z\-._]+")
FPORT_MIN: Final = 1
FPORT_MAX: Final = 224  # the OpenAPI text says 1..224; its schema says 225 (SPEC.md §9.10)


@dataclass(frozen=True, slots=True)
class DownlinkParams:
    """What to send. Build it, then :meth:`validated` normalises and checks it."""

    dev_eui: str
    fport: int | None = None
    payload_hex: str | None = None
    confirmed: bool = False
    flush_queue: bool = False
    validity_time: str | int | None = None
    """An ISO-8601 timestamp, or a lifetime in seconds."""
    fcnt_dn: int | None = None
    correlation_id: str | None = None

    def validated(self) -> DownlinkParams:
        """A copy with hex upper-cased, or :class:`DownlinkParameterError` naming the field."""
        if not _HEX16.fullmatch(self.dev_eui):
            raise DownlinkParameterError("dev_eui", "must be 16 hex digits")
        payload = self.payload_hex or None
        if payload is None:
            if not self.flush_queue:
                raise DownlinkParameterError(
                    "payload_hex", "is required unless the queue is flushed"
                )
        elif not _PAYLOAD.fullmatch(payload):
            raise DownlinkParameterError(
                "payload_hex", "must be 1 to 250 bytes as an even number of hex digits"
            )
        if payload is not None and self.fport is None:
            raise DownlinkParameterError("fport", "is required with a payload")
        if self.fport is not None and not FPORT_MIN <= self.fport <= FPORT_MAX:
            raise DownlinkParameterError("fport", f"must be {FPORT_MIN} to {FPORT_MAX}")
        if self.fcnt_dn is not None and self.fcnt_dn < 0:
            raise DownlinkParameterError("fcnt_dn", "must be 0 or more")
        if self.correlation_id is not None and not _HEX16.fullmatch(self.correlation_id):
            raise DownlinkParameterError("correlation_id", "must be 16 hex digits")
        validity = self.validity_time
        if isinstance(validity, int):
            if validity <= 0:
                raise DownlinkParameterError("validity_time", "must be a positive duration")
        elif validity is not None:
            try:
                datetime.fromisoformat(validity)
            except ValueError:
                raise DownlinkParameterError(
                    "validity_time", "must be an ISO-8601 time or a number of seconds"
                ) from None
        return replace(
            self,
            dev_eui=self.dev_eui.upper(),
            payload_hex=payload.upper() if payload else None,
            correlation_id=self.correlation_id.upper() if self.correlation_id else None,
        )


@dataclass(frozen=True, slots=True)
class SignedDownlink:
    """A signed query, ready to append to the downlink URL after ``?``."""

    query: str
    """Percent-encoded, Token last."""
    hashed: str
    """The text that was hashed, without the key."""
    token: str


def format_time(moment: datetime) -> str:
    """ThingPark's Time form: ``2016-01-11T14:28:00.333+02:00`` (needs an aware time)."""
    if moment.tzinfo is None:
        raise DownlinkParameterError("time", "must carry a UTC offset")
    return moment.isoformat(timespec="milliseconds")


def sign_downlink(
    params: DownlinkParams, *, as_id: str, key: AsKey, time: datetime | str
) -> SignedDownlink:
    """Validate ``params`` and sign them for ``as_id`` at ``time``.

    ``time`` is formatted with :func:`format_time`, or used verbatim when given as text
    (after a check that it parses), which reproduces published vectors byte for byte.
    """
    p = params.validated()
    if not _AS_ID.fullmatch(as_id):
        raise DownlinkParameterError("as_id", "may hold only letters, digits, '-', '.', '_'")
    if isinstance(time, str):
        try:
            datetime.fromisoformat(time)
        except ValueError:
            raise DownlinkParameterError("time", "must be an ISO-8601 time") from None
        time_text = time
    else:
        time_text = format_time(time)
    pairs: list[tuple[str, str]] = [("DevEUI", p.dev_eui)]
    if p.fport is not None:
        pairs.append(("FPort", str(p.fport)))
    if p.payload_hex is not None:
        pairs.append(("Payload", p.payload_hex))
    if p.fcnt_dn is not None:
        pairs.append(("FCntDn", str(p.fcnt_dn)))
    if p.confirmed:
        pairs.append(("Confirmed", "1"))
    if p.flush_queue:
        pairs.append(("FlushDownlinkQueue", "1"))
    if p.validity_time is not None:
        pairs.append(("ValidityTime", str(p.validity_time)))
    pairs += [("AS_ID", as_id), ("Time", time_text)]
    if p.correlation_id is not None:
        pairs.append(("CorrelationID", p.correlation_id))
    hashed = "&".join(f"{name}={value}" for name, value in pairs)
    token = compute_token("", hashed, key.reveal())
    encoded = "&".join(f"{name}={quote(value, safe='')}" for name, value in pairs)
    return SignedDownlink(f"{encoded}&Token={token}", hashed, token)
