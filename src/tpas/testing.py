"""Test seams shipped with tpas: report builders and a signer playing ThingPark's part.

Used by tpas's own tests, benchmarks and simulator, and by anyone testing an integration
against tpas: build a report, sign it as the network server would (SPEC.md §3, §7), and
POST ``body`` to ``/thingpark/{application}?{query}`` with ``content_type``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from tpas.protocol import (
    DEFAULT_RECIPES,
    AsKey,
    BodyFormat,
    Document,
    Gateway,
    Lrrs,
    Recipe,
    Uplink,
    body_elements,
    compute_token,
    encode,
    format_time,
    parse,
)

__all__ = ["CONTENT_TYPES", "SignedReport", "make_uplink", "sign_report"]

CONTENT_TYPES: Final[Mapping[BodyFormat, str]] = {
    BodyFormat.JSON: "application/json",
    BodyFormat.JSON_UNTYPED: "application/json",
    BodyFormat.XML: "application/xml",
}


@dataclass(frozen=True, slots=True)
class SignedReport:
    """A report body with the query string ThingPark would send with it."""

    body: bytes
    query: str
    content_type: str
    token: str


def sign_report(
    model: Document,
    *,
    key: AsKey,
    as_id: str,
    time: datetime | str,
    fmt: BodyFormat = BodyFormat.JSON,
    lrn_infos: str | None = None,
    recipes: Mapping[str, Recipe] = DEFAULT_RECIPES,
    overrides: Mapping[str, str] | None = None,
) -> SignedReport:
    """Render ``model`` in ``fmt`` and sign it like the network server.

    ``overrides`` replaces query values after signing (to build refused requests).
    """
    body = encode(model, fmt)
    raw = parse(body, fmt)
    dev_eui = str(raw.fields.get("DevEUI", ""))
    fport = raw.fields.get("FPort")
    values = {
        "LrnDevEui": dev_eui,
        "LrnFPort": "0" if fport is None else str(fport),
        "LrnInfos": lrn_infos or f"{as_id}-1-{zlib.crc32(dev_eui.encode()) % 10_000_000}",
        "AS_ID": as_id,
        "Time": time if isinstance(time, str) else format_time(time),
    }
    recipe = recipes.get(model.ROOT)
    elements = body_elements(recipe, raw.fields) if recipe else ""
    signed = "&".join(f"{k}={v}" for k, v in values.items())
    token = compute_token(elements, signed, key.reveal())
    values["Token"] = token
    if overrides:
        values.update(overrides)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in values.items())
    return SignedReport(body, query, CONTENT_TYPES[fmt], token)


def make_uplink(
    dev_eui: str = "0018B20000000B20",
    *,
    fcnt_up: int = 1,
    fport: int = 1,
    payload_hex: str = "0102",
    time: str = "2026-01-01T00:00:00.000+00:00",
    customer_id: str = "100000507",
    rssi: float = -80.0,
    snr: float = 7.5,
    spreading_factor: int = 7,
    gateways: int = 1,
    **fields: Any,
) -> Uplink:
    """A realistic ``DevEUI_uplink`` with ``gateways`` receiving base stations."""
    lrrs = [
        Gateway(
            lrrid=f"{0x08040059 + i:08X}",
            chain=0,
            rssi=rssi - 7 * i,
            snr=snr - 2 * i,
            esp=rssi - 7 * i - 1,
        )
        for i in range(gateways)
    ]
    return Uplink(
        time=time,
        dev_eui=dev_eui,
        fport=fport,
        fcnt_up=fcnt_up,
        adr_bit=1,
        mtype=2,
        fcnt_dn=0,
        payload_hex=payload_hex,
        mic_hex="38e7a3b9",
        lrcid="00000065",
        rssi=rssi,
        snr=snr,
        spreading_factor=spreading_factor,
        sub_band="G1",
        channel="LC2",
        dev_lrr_cnt=gateways,
        lrrid=lrrs[0].lrrid if lrrs else None,
        late=0,
        lrr_lat=48.874931,
        lrr_lon=2.333673,
        lrrs=Lrrs(lrr=lrrs),
        customer_id=customer_id,
        customer_data={"alr": {"pro": "LORA/Generic", "ver": "1"}},
        model_cfg="0",
        instant_per=0.0,
        mean_per=0.0,
        dev_addr="0405F519",
        tx_power=14.0,
        nb_trans=1,
        frequency=868.1,
        dynamic_class="A",
        **fields,
    )
