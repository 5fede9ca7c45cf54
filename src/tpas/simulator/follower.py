"""Downlinks sent through tpas's API and followed until they end (``sent``, ``failed``...).

The demo's downlinks: a few, alternately for a class A and a class C device, each a small
command (``01`` + its number) on :data:`COMMAND_FPORT`, then polled through
``GET /api/downlinks/{id}`` until every one reaches a final state or the run stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final

from tpas.errors import TpasError
from tpas.simulator.api_client import FINAL_STATES, TpasApi
from tpas.simulator.devices import VirtualDevice

__all__ = ["COMMAND_FPORT", "DownlinkFollower", "pick_targets"]

COMMAND_FPORT: Final = 10


def pick_targets(devices: Sequence[VirtualDevice], count: int) -> list[VirtualDevice]:
    """``count`` devices, alternately class A and class C as far as the fleet has them."""
    a = [d for d in devices if d.device_class == "A"]
    c = [d for d in devices if d.device_class == "C"]
    order = [d for pair in zip(a, c, strict=False) for d in pair] + a[len(c) :] + c[len(a) :]
    return [order[i % len(order)] for i in range(count)] if order else []


class DownlinkFollower:
    """Sends downlinks for one application and keeps their last known states."""

    def __init__(
        self, api: TpasApi, application: str, note: Callable[[str], None] = lambda _: None
    ) -> None:
        self.api = api
        self.application = application
        self.note = note
        self.states: dict[int, str] = {}
        self.errors: list[str] = []
        self.requested = 0

    @property
    def sent(self) -> int:
        """How many reached ``sent``."""
        return sum(state == "sent" for state in self.states.values())

    @property
    def done(self) -> bool:
        """Every requested downlink is queued and has reached a final state."""
        return len(self.states) == self.requested and all(
            state in FINAL_STATES for state in self.states.values()
        )

    def line(self) -> str:
        """A short live-progress segment."""
        return f"API downlinks {self.sent}/{self.requested} sent"

    async def send(self, devices: Sequence[VirtualDevice]) -> None:
        """POST one downlink per device; failures are kept in :attr:`errors`."""
        self.requested += len(devices)
        for device in devices:
            number = len(self.states) + len(self.errors) + 1
            try:
                queued = await self.api.send_downlink(
                    self.application,
                    dev_eui=device.dev_eui,
                    fport=COMMAND_FPORT,
                    payload_hex=f"01{number % 256:02X}",
                )
            except TpasError as exc:
                self.errors.append(f"downlink to {device.dev_eui}: {exc}")
                self.note(self.errors[-1])
                continue
            self.states[int(queued["id"])] = str(queued["status"])
            self.note(
                f"downlink #{queued['id']} queued for {device.dev_eui} (class "
                f"{device.device_class}), correlation id {queued['correlation_id']}"
            )

    async def follow(self, stop: asyncio.Event, interval: float = 0.25) -> None:
        """Poll until every downlink is final or ``stop`` is set, then poll once more."""
        while not stop.is_set() and not self.done:
            await self.poll()
            if not self.done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
        await self.poll()

    async def poll(self) -> None:
        """Read the state of every downlink not final yet; note the changes."""
        for downlink_id, previous in list(self.states.items()):
            if previous in FINAL_STATES:
                continue
            try:
                status = str((await self.api.downlink(downlink_id))["status"])
            except TpasError as exc:
                self.errors.append(str(exc))
                continue
            if status != previous:
                self.states[downlink_id] = status
                self.note(f"downlink #{downlink_id}: {previous} -> {status}")
