"""How the simulated network server checks a downlink request (SPEC.md §4.2 to §4.4).

Written independently of tpas's signer (:mod:`tpas.protocol.downlink`), so that the two
can disagree when one of them is wrong. The token is recomputed from the query string *as
received*: everything before ``&Token=``, percent-decoded, then the key appended as text,
``lowercase_hex(SHA-256(...))``, compared in constant time (SPEC.md §4.3). Parameters after
the Token (the OpenAPI lists ``CorrelationID`` there, SPEC.md §9.9) are read but not hashed.

Decoding follows ``application/x-www-form-urlencoded``: a literal ``+`` is a space, which
is how the real LRC is reported to read an unencoded ``+`` in the Time offset (SPEC.md
§9.11): such a request fails, as it would against ThingPark.

Checks run in this order, the first failure answering: DevEUI (100); AS_ID present (105);
Time and Token present (106); AS_ID (107); Time well-formed with an offset (109); Time
within ``max_deviation`` seconds (110, 0 = unchecked); Token (111); FPort (104); Payload
(118 absent or empty, 113 malformed or over 250 bytes); FCntDn (101, 102); ValidityTime
(112); CorrelationID (117). DevEUI and CorrelationID must be upper-case hex, as the
published patterns say; the Payload may be either case, as published examples are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import unquote_plus

__all__ = ["MESSAGES", "NO_BASE_STATION", "DownlinkOrder", "NsError", "check_downlink"]

MESSAGES: Final[Mapping[int, str]] = {
    100: "Invalid DevEUI",
    101: "Downlink counter value already used. Expected={expected}",
    102: "Downlink counter value increment too large. Expected={expected}",
    103: "Confirmed downlink is not authorized for this device",
    104: "Invalid LoRa port",
    105: "Security Check. AS_ID is mandatory",
    106: "Security Check. missing timestamp/token",
    107: "Security Check. bad AS_ID",
    108: "Security Check. Server Decrypt Error",
    109: "Security Check. malformed ISO8601 time",
    110: "Security Check. Invalid downlink frame timestamp",
    111: "Security Check. bad token",
    112: "ValidityTime expired or invalid",
    113: "Payload too big or invalid size",
    114: "Downlink transmission disabled",
    115: "No Base Station Available",
    116: "Invalid payload size according to currents DR",
    117: "Invalid CorrelationID. Must be a 64 bits hexadecimal value encoded as string",
    118: "Invalid payload. Must not be empty",
    119: "Payload must be provided encrypted with the downlink counter value",
    121: "Token bucket limit reached",
}
"""v2 error code -> message (the v1 body text), SPEC.md §4.4."""

NO_BASE_STATION: Final = 115
MAX_FCNT_GAP: Final = 16384  # LoRaWAN's MAX_FCNT_GAP: a larger jump is refused (102)

_UPPER_HEX16 = re.compile(r"[0-9A-F]{16}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_TOKEN = re.compile(r"[0-9a-f]{64}")
_PAYLOAD_MAX_BYTES: Final = 250
_FPORT_MAX: Final = 224


@dataclass(frozen=True, slots=True)
class NsError:
    """A refusal: the v2 code, the message, extra v2 fields (``expected``)."""

    code: int
    message: str
    extra: Mapping[str, int] = field(default_factory=dict)

    @property
    def v1_status(self) -> int:
        """v1 answers 404 for "No Base Station Available", 350 for everything else."""
        return 404 if self.code == NO_BASE_STATION else 350

    def v1_body(self) -> bytes:
        """``<html><body>message</body></html>``."""
        return f"<html><body>{self.message}</body></html>".encode()

    def v2_body(self) -> bytes:
        """``{"code": .., "message": .., ...}`` (answered with 409)."""
        return json.dumps({"code": self.code, "message": self.message, **self.extra}).encode()


def ns_error(code: int, **extra: int) -> NsError:
    """The documented error ``code`` (message filled in with ``extra``)."""
    return NsError(code, MESSAGES[code].format(**extra), extra)


@dataclass(frozen=True, slots=True)
class DownlinkOrder:
    """An accepted downlink request."""

    dev_eui: str
    time: datetime
    fport: int | None = None
    payload_hex: str | None = None
    fcnt_dn: int | None = None
    confirmed: bool = False
    flush_queue: bool = False
    expires_at: datetime | None = None
    correlation_id: str | None = None


def _params(raw: str) -> dict[str, str]:
    """Decoded parameters; the first occurrence of a name wins."""
    out: dict[str, str] = {}
    for part in raw.split("&"):
        if part:
            name, _, value = part.partition("=")
            out.setdefault(unquote_plus(name), unquote_plus(value))
    return out


def _hashed_text(raw: str) -> str:
    """Everything before ``&Token=``, decoded: what the sender hashed."""
    if raw.startswith("Token="):
        return ""
    return unquote_plus(raw.partition("&Token=")[0])


def _time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def check_downlink(
    raw_query: str,
    *,
    as_id: str,
    key: str,
    now: datetime,
    max_deviation: float,
    counter: Callable[[str], int] = lambda _: 0,
) -> DownlinkOrder | NsError:
    """Check a downlink query as received; ``counter(dev_eui)`` is the next FCntDn the
    network server expects from that device's AS-encrypted downlinks."""
    p = _params(raw_query)
    dev_eui = p.get("DevEUI", "")
    if not _UPPER_HEX16.fullmatch(dev_eui):
        return ns_error(100)
    if "AS_ID" not in p:
        return ns_error(105)
    if "Time" not in p or "Token" not in p:
        return ns_error(106)
    if p["AS_ID"] != as_id:
        return ns_error(107)
    sent = _time(p["Time"])
    if sent is None:
        return ns_error(109)
    if max_deviation > 0 and abs((now - sent).total_seconds()) > max_deviation:
        return ns_error(110)
    expected = hashlib.sha256((_hashed_text(raw_query) + key).encode()).hexdigest()
    token = p["Token"]
    if not _TOKEN.fullmatch(token) or not hmac.compare_digest(expected, token):
        return ns_error(111)
    payload = p.get("Payload")
    fport: int | None = None
    if "FPort" in p or payload is not None:
        text = p.get("FPort", "")
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= _FPORT_MAX):
            return ns_error(104)
        fport = int(text)
    flush = p.get("FlushDownlinkQueue") == "1"
    if payload is None:
        if not flush:
            return ns_error(118)
    elif not payload:
        return ns_error(118)
    elif not _HEX.fullmatch(payload) or len(payload) // 2 > _PAYLOAD_MAX_BYTES:
        return ns_error(113)
    fcnt_dn: int | None = None
    if "FCntDn" in p:
        text, next_fcnt = p["FCntDn"], counter(dev_eui)
        if not (text.isascii() and text.isdigit()) or int(text) < next_fcnt:
            return ns_error(101, expected=next_fcnt)
        if int(text) - next_fcnt > MAX_FCNT_GAP:
            return ns_error(102, expected=next_fcnt)
        fcnt_dn = int(text)
    expires_at: datetime | None = None
    if "ValidityTime" in p:
        text = p["ValidityTime"]
        if text.isascii() and text.isdigit():
            expires_at = now + timedelta(seconds=int(text)) if int(text) > 0 else None
        else:
            expires_at = _time(text)
        if expires_at is None or expires_at <= now:
            return ns_error(112)
    correlation_id = p.get("CorrelationID")
    if correlation_id is not None and not _UPPER_HEX16.fullmatch(correlation_id):
        return ns_error(117)
    return DownlinkOrder(
        dev_eui=dev_eui,
        time=sent,
        fport=fport,
        payload_hex=payload.upper() if payload else None,
        fcnt_dn=fcnt_dn,
        confirmed=p.get("Confirmed") == "1",
        flush_queue=flush,
        expires_at=expires_at,
        correlation_id=correlation_id,
    )
