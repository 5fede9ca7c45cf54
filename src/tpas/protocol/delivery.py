"""Delivery reports explained: transmission slots and failure causes (SPEC.md §5.4)."""

from __future__ import annotations

from typing import Any, Final

from tpas.protocol.models import DownlinkRejected, DownlinkSent

__all__ = ["CAUSES", "SLOTS", "describe_delivery"]

SLOTS: Final = {0: "unknown", 1: "RX1", 2: "RX2", 3: "ping slot", 4: "RXR (relay)"}
"""``TransmissionSlot`` values."""

_COMMON: Final = {
    "A0": "radio stopped",
    "A1": "downlink radio stopped",
    "A3": "radio busy",
    "A4": "listen before talk: channel busy",
    "A5": "radio board error",
    "D0": "duty cycle (base station)",
    "DA": "duty cycle (network server)",
    "DB": "maximum dwell time (network server)",
    "DE": "duty cycle not allowed by the peering operator",
}

CAUSES: Final[dict[int, dict[str, str]]] = {
    1: {**_COMMON, "A2": "RX1 not available", "B0": "too late for RX1",
        "C0": "network server selected RX2"},
    2: {**_COMMON, "B0": "too late for RX2", "E0": "class C maximum delay (60 s) passed"},
    3: {**_COMMON, "A2": "ping slot not available", "B0": "too late for the ping slot",
        "DC": "no GPS-synchronised base station", "DD": "no base station connected",
        "DF": "wrong NetID"},
    4: _COMMON,
}  # fmt: skip
"""Failure cause texts per cause field (1: RX1, 2: RX2, 3: class B ping slot, 4: relay)."""

_CAUSE_SLOT: Final = {1: "RX1", 2: "RX2", 3: "ping slot", 4: "RXR (relay)"}


def describe_delivery(report: DownlinkSent | DownlinkRejected) -> dict[str, Any]:
    """The delivery facts of a report, with slot and causes decoded to text."""
    if isinstance(report, DownlinkRejected):
        return {
            "report": "DevEUI_downlink_Rejected",
            "delivery_status": report.delivery_status,
            "rejection_cause": report.downlink_rejection_cause,
        }
    causes = []
    for index in (1, 2, 3, 4):
        code = getattr(report, f"delivery_failed_cause{index}")
        if code and code != "00":
            text = CAUSES[index].get(code.upper(), "unknown cause")
            causes.append({"slot": _CAUSE_SLOT[index], "code": code, "text": text})
    slot = report.transmission_slot
    return {
        "report": "DevEUI_downlink_Sent",
        "delivery_status": report.delivery_status,
        "transmission_slot": slot,
        "slot": SLOTS.get(slot, "unknown") if slot is not None else None,
        "causes": causes,
        "fcnt_dn": report.fcnt_dn,
        "frequency": report.frequency,
        "time": report.time,
    }
