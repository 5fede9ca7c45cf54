"""What the network server answers to a downlink request, and what tpas does about it.

Both endpoint generations are understood (SPEC.md §4.4): v1 ``/downlink`` answers 200
with an HTML body, the non-standard 350 with ``<html><body>message</body></html>``, or 404
"No Base Station Available"; v2 ``/v2/downlink`` answers 202, or 409 with a JSON
``{"code", "message"}``. Each error is classified as *permanent* (sending the same request
again cannot succeed: stop) or *transient* (it may succeed later: retry with backoff).
The table is :data:`ERRORS`; docs/downlinks.md renders it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec

__all__ = ["ERRORS", "NsAnswer", "Outcome", "classify_answer"]


class Outcome(StrEnum):
    """What an answer means for the downlink."""

    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class NsError:
    """One documented network-server error: v2 code, v1 message prefix, classification."""

    code: int
    message: str
    outcome: Outcome


_P, _T = Outcome.PERMANENT, Outcome.TRANSIENT

ERRORS: Final = (
    NsError(100, "Invalid DevEUI", _P),
    NsError(101, "Downlink counter value already used", _P),
    NsError(102, "Downlink counter value increment too large", _P),
    NsError(103, "Confirmed downlink is not authorized for this device", _P),
    NsError(104, "Invalid LoRa port", _P),
    NsError(105, "Security Check. AS_ID is mandatory", _P),
    NsError(106, "Security Check. missing timestamp/token", _P),
    NsError(107, "Security Check. bad AS_ID", _P),
    NsError(108, "Security Check. Server Decrypt Error", _P),
    NsError(109, "Security Check. malformed ISO8601 time", _P),
    # The clocks disagreed: the next attempt is signed with a fresh Time.
    NsError(110, "Security Check. Invalid downlink frame timestamp", _T),
    NsError(111, "Security Check. bad token", _P),
    NsError(112, "ValidityTime expired or invalid", _P),
    NsError(113, "Payload too big or invalid size", _P),
    NsError(114, "Downlink transmission disabled", _P),
    NsError(115, "No Base Station Available", _T),
    # The data rate can change (ADR), after which the payload may fit.
    NsError(116, "Invalid payload size according to currents DR", _T),
    NsError(117, "Invalid CorrelationID", _P),
    NsError(118, "Invalid payload. Must not be empty", _P),
    NsError(119, "Payload must be provided encrypted with the downlink counter value", _P),
    NsError(121, "Token bucket limit reached", _T),
)
"""Every error SPEC.md §4.4 lists, with the v2 code and the v1 message."""

_BY_CODE: Final = {e.code: e for e in ERRORS}
_HTML_BODY = re.compile(r"<body>(.*?)</body>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class NsAnswer:
    """A classified answer: the outcome, the network server's message, its v2 code."""

    outcome: Outcome
    message: str
    code: int | None = None


def _html_message(body: str) -> str:
    match = _HTML_BODY.search(body)
    return (match.group(1) if match else body).strip()[:500]


def _by_message(message: str) -> NsError | None:
    for error in ERRORS:
        if message.startswith(error.message):
            return error
    return None


def classify_answer(status: int, body: str) -> NsAnswer:
    """Classify a network-server answer to a downlink request (either generation).

    2xx is acceptance. A documented error takes its table entry; otherwise 5xx, 408 and
    429 are transient and any other status is permanent (sending it again unchanged
    would only repeat the refusal).
    """
    if 200 <= status < 300:
        return NsAnswer(Outcome.ACCEPTED, _html_message(body) if body else "accepted")
    code: int | None = None
    message = ""
    if body.lstrip().startswith("{"):
        try:
            data = msgspec.json.decode(body)
        except msgspec.DecodeError:
            data = None
        if isinstance(data, dict):
            raw_code = data.get("code")
            code = raw_code if isinstance(raw_code, int) else None
            message = str(data.get("message", ""))[:500]
    else:
        message = _html_message(body)
    known = _BY_CODE.get(code) if code is not None else _by_message(message)
    if known is not None:
        return NsAnswer(known.outcome, message or known.message, known.code)
    if status >= 500 or status in (408, 429):
        return NsAnswer(Outcome.TRANSIENT, message or f"HTTP {status}", code)
    return NsAnswer(Outcome.PERMANENT, message or f"HTTP {status}", code)
