"""The simulated sensors' payload format, version 1 (docs/simulator.md, "Sensor payload").

Seven bytes, big-endian, sent on :data:`SENSOR_FPORT`::

    byte 0     format version, 0x01
    bytes 1-2  temperature, signed 16 bits, in 0.01 °C      (-327.68 .. 327.67)
    byte 3     relative humidity, unsigned 8 bits, in 0.5 %  (0 .. 100)
    bytes 4-5  battery voltage, unsigned 16 bits, in mV
    byte 6     flags: bit 0 button pressed, bit 1 moving; other bits 0

``payload_hex`` carries it in lower-case hex, like ThingPark's examples:
``01092e5a0e1002`` is 23.50 °C, 45.0 %, 3600 mV, moving.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["FORMAT_VERSION", "SENSOR_FPORT", "Reading", "decode_reading", "encode_reading"]

FORMAT_VERSION: Final = 1
SENSOR_FPORT: Final = 2
"""The FPort sensor readings travel on."""

_LAYOUT: Final = struct.Struct(">BhBHB")
_BUTTON: Final = 0x01
_MOVING: Final = 0x02


@dataclass(frozen=True, slots=True)
class Reading:
    """One sensor reading, at the resolution the payload carries."""

    temperature: float
    """°C, 0.01 resolution."""
    humidity: float
    """%RH, 0.5 resolution."""
    battery_mv: int
    button: bool = False
    moving: bool = False


def encode_reading(reading: Reading) -> str:
    """The reading as lower-case hex (values outside the format's range are clamped)."""
    temperature = max(-32768, min(32767, round(reading.temperature * 100)))
    humidity = max(0, min(200, round(reading.humidity * 2)))
    battery = max(0, min(0xFFFF, reading.battery_mv))
    flags = (_BUTTON if reading.button else 0) | (_MOVING if reading.moving else 0)
    return _LAYOUT.pack(FORMAT_VERSION, temperature, humidity, battery, flags).hex()


def decode_reading(payload_hex: str) -> Reading:
    """Read a version-1 payload; ``ValueError`` for anything else."""
    data = bytes.fromhex(payload_hex)
    if len(data) != _LAYOUT.size or data[0] != FORMAT_VERSION:
        raise ValueError(f"not a version {FORMAT_VERSION} sensor payload of {_LAYOUT.size} bytes")
    _, temperature, humidity, battery, flags = _LAYOUT.unpack(data)
    return Reading(
        temperature=temperature / 100,
        humidity=humidity / 2,
        battery_mv=battery,
        button=bool(flags & _BUTTON),
        moving=bool(flags & _MOVING),
    )
