"""Virtual devices: their counters, radio, sensors and position, and the reports they cause.

A device is a small state machine driven by the simulation's clock (``now`` is always an
argument) and its own random generator (seeded from the fleet's, so a run is reproducible
with ``--seed`` whatever order the devices are drawn in):

* frame counters: ``FCntUp`` counts up from 0 and restarts with a new session (a Join, or
  an ABP automatic reset, which also changes nothing else); ``FCntDn`` is what the network
  server's downlinks reached;
* radio: RSSI and SNR drift around the device's own level (mean-reverting random walks),
  the spreading factor follows the SNR like ADR would, and 1 to 3 of three fixed gateways
  hear each frame, best first;
* sensors: temperature, humidity and battery drift slowly and travel in the payload
  format of :mod:`tpas.simulator.payload`;
* position: every device moves (walking to driving speeds, heading wandering), which the
  location reports follow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from tpas.protocol import Gateway, Location, Lrrs, Notification, Uplink, format_time
from tpas.simulator.payload import SENSOR_FPORT, Reading, encode_reading
from tpas.testing import make_uplink

__all__ = ["CUSTOMER_ID", "GATEWAYS", "LRCID", "Fleet", "Site", "VirtualDevice", "dev_eui_for"]

CUSTOMER_ID: Final = "100000507"
LRCID: Final = "00000065"


@dataclass(frozen=True, slots=True)
class Site:
    """A fixed gateway (LRR): its id and position."""

    lrrid: str
    lat: float
    lon: float


GATEWAYS: Final = (
    Site("08040059", 48.874931, 2.333673),
    Site("0804005A", 48.846200, 2.346400),
    Site("0804005B", 48.860600, 2.294500),
)
"""The three gateways every device may be heard by."""

# EU868 default channels: (Channel, MHz).
_CHANNELS: Final = (("LC0", 868.1), ("LC1", 868.3), ("LC2", 868.5))
# Time on air of a ~20-byte frame at 125 kHz, per spreading factor, in seconds.
_AIRTIME: Final = {7: 0.0617, 8: 0.1132, 9: 0.2058, 10: 0.3707, 11: 0.8233, 12: 1.4828}
_METRES_PER_DEGREE: Final = 111_320.0
_CENTRE: Final = (48.8566, 2.3522)


def dev_eui_for(index: int) -> str:
    """The DevEUI of the fleet's device ``index``: stable across runs, upper-case hex."""
    return f"70B3D57ED0{index:06X}"


@dataclass(frozen=True, slots=True)
class _Heard:
    """One gateway's reception of a frame."""

    site: Site
    rssi: float
    snr: float

    @property
    def esp(self) -> float:
        """Estimated signal power: RSSI + SNR - 10·log10(1 + 10^(SNR/10))."""
        return round(self.rssi + self.snr - 10 * math.log10(1 + 10 ** (self.snr / 10)), 2)


def _spreading_factor(snr: float) -> int:
    """ADR's choice: the fastest spreading factor keeping ~10 dB of link margin."""
    for sf, floor in ((7, 2.5), (8, 0.0), (9, -2.5), (10, -5.0), (11, -7.5)):
        if snr >= floor:
            return sf
    return 12


class VirtualDevice:
    """One simulated device; every report method advances its state."""

    def __init__(
        self, index: int, rng: random.Random, *, customer_id: str, device_class: str
    ) -> None:
        self.index = index
        self.rng = rng
        self.dev_eui = dev_eui_for(index)
        self.device_class = device_class
        self.customer_id = customer_id
        self.dev_addr = f"{rng.getrandbits(32):08X}"
        self.fcnt_up = 0
        """The counter of the next uplink."""
        self.fcnt_dn = 0
        self.dev_nonce = rng.randrange(0x10000)
        self._level = rng.uniform(-112.0, -62.0)
        self.rssi = self._level
        self.snr = self._snr_for(self.rssi)
        self._loss = [0.0] + [rng.uniform(3.0, 18.0) for _ in GATEWAYS[1:]]
        rng.shuffle(self._loss)
        self._base_temperature = rng.uniform(14.0, 26.0)
        self.temperature = self._base_temperature
        self.humidity = rng.uniform(35.0, 65.0)
        self.battery_mv = rng.randint(3300, 3650)
        self.lat = _CENTRE[0] + rng.uniform(-0.03, 0.03)
        self.lon = _CENTRE[1] + rng.uniform(-0.05, 0.05)
        self.heading = rng.uniform(0.0, 2 * math.pi)
        self.speed = rng.choice((0.8, 1.4, 1.4, 4.0, 8.3, 13.9))
        self._moved_at: datetime | None = None
        self._stamped: datetime | None = None

    # -- state -----------------------------------------------------------------------------

    def _snr_for(self, rssi: float) -> float:
        return max(-20.0, min(12.0, (rssi + 115.0) / 3.5))

    def _drift(self) -> None:
        rng = self.rng
        step = 0.2 * (self._level - self.rssi) + rng.gauss(0.0, 2.0)
        self.rssi = max(-125.0, min(-40.0, self.rssi + step))
        self.snr = max(-20.0, min(12.0, self._snr_for(self.rssi) + rng.gauss(0.0, 1.0)))
        target = self._base_temperature
        self.temperature += 0.1 * (target - self.temperature) + rng.gauss(0.0, 0.15)
        self.humidity = max(5.0, min(99.0, self.humidity + rng.gauss(0.0, 0.4)))
        if rng.random() < 0.2:
            self.battery_mv = max(3000, self.battery_mv - 1)

    def _move(self, now: datetime) -> None:
        elapsed = 0.0 if self._moved_at is None else (now - self._moved_at).total_seconds()
        self._moved_at = now
        self.heading += self.rng.gauss(0.0, 0.35)
        distance = self.speed * max(0.0, elapsed)
        self.lat += distance * math.cos(self.heading) / _METRES_PER_DEGREE
        self.lon += (
            distance
            * math.sin(self.heading)
            / (_METRES_PER_DEGREE * math.cos(math.radians(self.lat)))
        )

    def _stamp(self, now: datetime) -> str:
        """The body Time of a new report: ``now``, but always at least a millisecond after
        the device's previous one, so two reports of a device never share a Time (tpas
        would take the second for a duplicate of the first)."""
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        if self._stamped is not None and now <= self._stamped:
            now = self._stamped + timedelta(milliseconds=1)
        self._stamped = now
        return format_time(now)

    def _new_session(self) -> None:
        """A Join (or an ABP automatic reset): counters restart."""
        self.fcnt_up = 0
        self.fcnt_dn = 0

    def _next_fcnt(self) -> int:
        counter = self.fcnt_up
        self.fcnt_up += 1
        return counter

    def _heard(self) -> list[_Heard]:
        rng = self.rng
        heard = [
            _Heard(
                site,
                round(self.rssi - loss + rng.gauss(0.0, 1.0)),
                round((self.snr - loss / 3 + rng.gauss(0.0, 0.5)) * 4) / 4,
            )
            for site, loss in zip(GATEWAYS, self._loss, strict=True)
        ]
        heard.sort(key=lambda h: h.rssi, reverse=True)
        wanted = 1 + (rng.random() < 0.6) + (rng.random() < 0.3)
        audible = [h for h in heard[1:] if h.rssi > -123]
        return [heard[0], *audible[: wanted - 1]]

    def _customer_data(self) -> dict[str, Any]:
        return {"alr": {"pro": "TPAS/SIM", "ver": "1"}, "name": f"sim-{self.index:03d}"}

    def reading(self) -> Reading:
        """The sensors now (the button is pressed now and then)."""
        return Reading(
            temperature=self.temperature,
            humidity=self.humidity,
            battery_mv=self.battery_mv,
            button=self.rng.random() < 0.02,
            moving=self.speed > 1.0,
        )

    # -- reports ---------------------------------------------------------------------------

    def uplink(self, now: datetime, *, late_by: float = 0.0) -> Uplink:
        """A sensor uplink on :data:`SENSOR_FPORT`; ``late_by`` seconds makes it a ``Late=1``
        frame whose body ``Time`` is that much older (a gateway buffered it, SPEC.md §6)."""
        self._drift()
        self._move(now)
        heard = self._heard()
        best = heard[0]
        sf = _spreading_factor(best.snr)
        channel, frequency = self.rng.choice(_CHANNELS)
        frame_time = format_time(now - timedelta(seconds=late_by)) if late_by else self._stamp(now)
        base = make_uplink(
            self.dev_eui,
            fcnt_up=self._next_fcnt(),
            fport=SENSOR_FPORT,
            payload_hex=encode_reading(self.reading()),
            time=frame_time,
            customer_id=self.customer_id,
            rssi=best.rssi,
            snr=best.snr,
            spreading_factor=sf,
            gateways=len(heard),
        )
        return msgspec.structs.replace(
            base,
            lrrs=Lrrs(lrr=[self._gateway(h) for h in heard]),
            lrrid=best.site.lrrid,
            esp=best.esp,
            lrr_lat=best.site.lat,
            lrr_lon=best.site.lon,
            dev_addr=self.dev_addr,
            fcnt_dn=self.fcnt_dn,
            channel=channel,
            frequency=frequency,
            mic_hex=f"{self.rng.getrandbits(32):08x}",
            late=1 if late_by else 0,
            lost_uplinks_as=-1 if late_by else 0,
            dynamic_class=self.device_class,
            customer_data=self._customer_data(),
            tx_power=14.0 if sf < 10 else 16.0,
            instant_per=0.0,
            mean_per=round(self.rng.uniform(0.0, 0.05), 4),
        )

    def _gateway(self, heard: _Heard) -> Gateway:
        return Gateway(
            lrrid=heard.site.lrrid, chain=0, rssi=heard.rssi, snr=heard.snr, esp=heard.esp
        )

    def join_request(self, now: datetime) -> Uplink:
        """A Join-Request report (no FPort, FCntUp or payload; SPEC.md §5.1); the device
        then starts a new session: counters restart, a new DevAddr."""
        self._drift()
        heard = self._heard()
        best = heard[0]
        sf = _spreading_factor(best.snr)
        channel, frequency = self.rng.choice(_CHANNELS)
        self.dev_nonce = (self.dev_nonce + 1) % 0x10000
        mic = f"{self.rng.getrandbits(32):08x}"
        join_eui = bytes.fromhex("70B3D57ED0000000")[::-1].hex()
        dev_eui = bytes.fromhex(self.dev_eui)[::-1].hex()
        raw = f"00{join_eui}{dev_eui}{self.dev_nonce.to_bytes(2, 'little').hex()}{mic}"
        report = Uplink(
            time=self._stamp(now),
            dev_eui=self.dev_eui,
            mtype=0,
            raw_join_request=raw,
            mic_hex=mic,
            lrcid=LRCID,
            lrrid=best.site.lrrid,
            chain=0,
            channel=channel,
            spreading_factor=sf,
            sub_band="G1",
            frequency=frequency,
            airtime=_AIRTIME[sf],
            late=0,
            lrr_lat=best.site.lat,
            lrr_lon=best.site.lon,
            rssi=best.rssi,
            snr=best.snr,
            lrrs=Lrrs(lrr=[self._gateway(h) for h in heard]),
            customer_id=self.customer_id,
            customer_data=self._customer_data(),
            model_cfg="0",
        )
        self._new_session()
        self.dev_addr = f"{self.rng.getrandbits(32):08X}"
        return report

    def notification(self, now: datetime) -> Notification:
        """A notification: battery status (most often), an automatic reset or a join."""
        self._drift()
        kind = self.rng.choices(("devstatusans", "reset", "join"), weights=(6, 2, 2))[0]
        var1: str | None
        var2: str | None = None
        if kind == "devstatusans":
            # Var1: battery 1..254 (0 external power, 255 unknown); Var2: margin -32..31.
            level = round(1 + 253 * (self.battery_mv - 3000) / 700)
            var1 = str(max(1, min(254, level)))
            var2 = str(max(-32, min(31, round(self.snr))))
        elif kind == "reset":
            var1 = "automatic_reset"
            self._new_session()
        else:
            var1 = ""  # the AppSKey wrapped with the AS transport key; may be empty
            self._new_session()
            self.dev_addr = f"{self.rng.getrandbits(32):08X}"
        return Notification(
            time=self._stamp(now),
            dev_eui=self.dev_eui,
            lrcid=LRCID,
            dev_addr=self.dev_addr,
            customer_id=self.customer_id,
            customer_data=self._customer_data(),
            model_cfg="0",
            fcnt_dn=self.fcnt_dn,
            type=kind,
            var1=var1,
            var2=var2,
        )

    def location(self, now: datetime) -> Location:
        """A network-geolocation result where the device has moved to."""
        self._move(now)
        rng = self.rng
        algo = rng.choice((0, 1))  # TDOA or RSSI
        accuracy = round(rng.uniform(15.0, 60.0) if algo == 0 else rng.uniform(80.0, 400.0), 1)
        error = accuracy / _METRES_PER_DEGREE / 3
        north = self.speed * math.cos(self.heading)
        east = self.speed * math.sin(self.heading)
        text = self._stamp(now)
        return Location(
            time=text,
            dev_eui=self.dev_eui,
            dev_addr=self.dev_addr,
            lrcid=LRCID,
            nw_geoloc_algo=algo,
            nw_geoloc_algo_used=algo,
            nw_geoloc_tdoa_opt=0,
            dev_loc_time=text,
            dev_lat=round(self.lat + rng.gauss(0.0, error), 6),
            dev_lon=round(self.lon + rng.gauss(0.0, error), 6),
            dev_alt=round(rng.uniform(30.0, 60.0), 1),
            dev_acc=accuracy,
            dev_loc_radius=accuracy,
            dev_alt_radius=round(accuracy * 1.5, 1),
            dev_ul_fcnt_up_used=max(0, self.fcnt_up - 1),
            dev_loc_dilution=round(rng.uniform(1.0, 3.0), 2),
            dev_alt_dilution=round(rng.uniform(1.0, 4.0), 2),
            dev_north_vel=round(north, 2),
            dev_east_vel=round(east, 2),
            customer_id=self.customer_id,
            customer_data=self._customer_data(),
            model_cfg="0",
        )


class Fleet:
    """The simulated devices: every ``class_c_every``-th one is class C, the rest class A."""

    def __init__(
        self,
        size: int,
        rng: random.Random,
        *,
        customer_id: str = CUSTOMER_ID,
        class_c_every: int = 4,
    ) -> None:
        if size < 1:
            raise ValueError("a fleet needs at least one device")
        self.devices = [
            VirtualDevice(
                index,
                random.Random(rng.getrandbits(64)),
                customer_id=customer_id,
                device_class="C"
                if class_c_every and index % class_c_every == class_c_every - 1
                else "A",
            )
            for index in range(size)
        ]
        self.by_eui = {d.dev_eui: d for d in self.devices}

    def __iter__(self) -> Iterator[VirtualDevice]:
        return iter(self.devices)

    def __len__(self) -> int:
        return len(self.devices)
