"""Typed models of ThingPark's tunnel documents (SPEC.md §5 and §4.5).

One frozen struct per document type. Attribute names are Python names; each field's wire
name (``DevEUI``, ``FCntUp``, ...) is set with ``msgspec.field(name=...)``, so converting a
model to builtins gives ThingPark's keys back. Every field is optional except the identity
of the report (``DevEUI``, or ``LrrID`` for a base-station alarm): ThingPark adds fields
release by release and omits many, so presence is never assumed.

Fields tpas does not know are kept in ``extra`` (wire name -> value as received), so a
report read and written back loses nothing. Body ``Time`` values stay text: Actility's own
samples contain malformed ones (SPEC.md §9.15) and the report must still be readable; use
:func:`parse_time` to get a datetime when the text allows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final

import msgspec

__all__ = [
    "OBJECT_OR_TEXT",
    "REPORT_TYPES",
    "BaseStationAlarm",
    "DeviceAlarm",
    "Document",
    "DownlinkRejected",
    "DownlinkRequest",
    "DownlinkSent",
    "Gateway",
    "Location",
    "Lrrs",
    "MulticastSummary",
    "Notification",
    "Report",
    "Uplink",
    "parse_time",
]

DevEui = Annotated[str, msgspec.Meta(pattern="^[0-9A-Fa-f]{16}$")]
"""A DevEUI: 16 hex digits, either case (lower case occurs in published reports)."""

LrrId = Annotated[str, msgspec.Meta(pattern="^[0-9A-Fa-f]{8}$")]
"""A base-station (LRR) identifier: 8 hex digits."""

# Non-finite values have no JSON form; bounding the range refuses NaN (every comparison
# with NaN is false) and the infinities, so such a value is kept as unknown text instead.
Float = Annotated[float, msgspec.Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]

JsonObject = dict[str, Any]
ObjectOrText = JsonObject | str
"""``CustomerData`` and friends: an object, or text that is not a JSON object (kept as is)."""

OBJECT_OR_TEXT: Final = frozenset({"CustomerData", "DriverCfg", "BaseStationData", "payload"})
"""Wire names of the fields that are objects in JSON and JSON text in XML."""


def _f(name: str) -> Any:
    """An optional field with wire name ``name``."""
    return msgspec.field(default=None, name=name)


class _Base(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    frozen=True,
    forbid_unknown_fields=True,
    gc=False,
):
    """Shared configuration: keyword-only, immutable, absent fields omitted on output.

    Unknown fields are refused by msgspec itself so that the fast decoding path
    (:mod:`tpas.protocol.intake`) falls back to the tolerant one, which keeps them in
    ``extra``; they are never silently dropped. ``gc=False``: models hold JSON data only,
    which cannot form reference cycles, so the cycle collector need not track them.
    """

    extra: JsonObject = msgspec.field(default_factory=dict, name="extra")


class Gateway(_Base, kw_only=True, frozen=True):
    """One entry of ``Lrrs.Lrr``: a base station that received the uplink."""

    lrrid: str | None = _f("Lrrid")
    chain: int | None = _f("Chain")
    rssi: Float | None = _f("LrrRSSI")
    snr: Float | None = _f("LrrSNR")
    esp: Float | None = _f("LrrESP")
    relay_id: str | None = _f("Relayid")


class Lrrs(
    msgspec.Struct,
    kw_only=True,
    omit_defaults=True,
    frozen=True,
    forbid_unknown_fields=True,
    gc=False,
):
    """``Lrrs``: the gateway list, ``{"Lrr": [...]}`` on the wire (a list even with one).

    No ``extra`` here: XML has no place for a sibling of ``Lrr``, so an ``Lrrs`` holding
    anything else is unknown as a whole and kept in the report's ``extra``.
    """

    lrr: list[Gateway] = msgspec.field(default_factory=list, name="Lrr")


class Document(_Base, kw_only=True, frozen=True):
    """Common base of every tunnel document; ``ROOT`` is its root key / element."""

    ROOT: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    @property
    def kind(self) -> str:
        """The short type name used by tpas's API (``uplink``, ``location``, ...)."""
        return self.KIND


class Report(Document, kw_only=True, frozen=True):
    """A report sent by the network server to the application server."""

    time: str | None = _f("Time")
    customer_id: str | None = _f("CustomerID")
    customer_data: ObjectOrText | None = _f("CustomerData")


class Uplink(Report, kw_only=True, frozen=True):
    """``DevEUI_uplink``: an uplink frame, or a Join-Request report (SPEC.md §5.1)."""

    ROOT = "DevEUI_uplink"
    KIND = "uplink"

    dev_eui: DevEui = msgspec.field(name="DevEUI")
    fport: int | None = _f("FPort")
    fcnt_up: int | None = _f("FCntUp")
    lost_uplinks_as: int | None = _f("LostUplinksAS")
    adr_bit: int | None = _f("ADRbit")
    ack_bit: int | None = _f("ACKbit")
    mtype: int | None = _f("MType")
    fcnt_dn: int | None = _f("FCntDn")
    payload_hex: str | None = _f("payload_hex")
    payload_encryption: int | None = _f("PayloadEncryption")
    mic_hex: str | None = _f("mic_hex")
    lrcid: str | None = _f("Lrcid")
    rssi: Float | None = _f("LrrRSSI")
    snr: Float | None = _f("LrrSNR")
    esp: Float | None = _f("LrrESP")
    spreading_factor: int | None = _f("SpFact")
    sub_band: str | None = _f("SubBand")
    channel: str | None = _f("Channel")
    dev_lrr_cnt: int | None = _f("DevLrrCnt")
    lrrid: str | None = _f("Lrrid")
    relay_id: str | None = _f("Relayid")
    late: int | None = _f("Late")
    lrr_lat: Float | None = _f("LrrLAT")
    lrr_lon: Float | None = _f("LrrLON")
    lrrs: Lrrs | None = _f("Lrrs")
    dev_loc_time: str | None = _f("DevLocTime")
    dev_lat: Float | None = _f("DevLAT")
    dev_lon: Float | None = _f("DevLON")
    dev_alt: Float | None = _f("DevAlt")
    dev_acc: Float | None = _f("DevAcc")
    dev_loc_radius: Float | None = _f("DevLocRadius")
    dev_alt_radius: Float | None = _f("DevAltRadius")
    dev_ul_fcnt_up_used: int | None = _f("DevUlFCntUpUsed")
    dev_loc_dilution: Float | None = _f("DevLocDilution")
    dev_alt_dilution: Float | None = _f("DevAltDilution")
    dev_north_vel: Float | None = _f("DevNorthVel")
    dev_east_vel: Float | None = _f("DevEastVel")
    nw_geoloc_algo: int | None = _f("NwGeolocAlgo")
    nw_geoloc_algo_used: int | None = _f("NwGeolocAlgoUsed")
    base_station_data: ObjectOrText | None = _f("BaseStationData")
    model_cfg: str | None = _f("ModelCfg")
    driver_cfg: ObjectOrText | None = _f("DriverCfg")
    app_skey: str | None = _f("AppSKey")
    battery_level: int | None = _f("BatteryLevel")
    battery_time: str | None = _f("BatteryTime")
    margin: int | None = _f("Margin")
    instant_per: Float | None = _f("InstantPER")
    mean_per: Float | None = _f("MeanPER")
    dev_addr: str | None = _f("DevAddr")
    ack_requested: int | None = _f("AckRequested")
    raw_mac_commands: str | None = _f("rawMacCommands")
    tx_power: Float | None = _f("TxPower")
    nb_trans: int | None = _f("NbTrans")
    frequency: Float | None = _f("Frequency")
    dynamic_class: str | None = _f("DynamicClass")
    class_b_periodicity: int | None = _f("ClassBPeriodicity")
    max_wait_as_resps: int | None = _f("MaxWaitASResps")
    uplink_dc: Float | None = _f("UplinkDC")
    uplink_dc_sub_band: Float | None = _f("UplinkDCSubBand")
    # Join-Request reports (SPEC.md §5.1): no FPort/FCntUp/payload_hex, these instead.
    raw_join_request: str | None = _f("rawJoinRequest")
    chain: int | None = _f("Chain")
    airtime: Float | None = _f("airtime")

    @property
    def kind(self) -> str:
        """``join_request`` for a Join-Request report, ``uplink`` otherwise."""
        return "join_request" if self.raw_join_request is not None else "uplink"

    @property
    def gateways(self) -> list[Gateway]:
        """The receiving gateways (``Lrrs.Lrr``), best first; empty when not reported."""
        return self.lrrs.lrr if self.lrrs is not None else []


class Notification(Report, kw_only=True, frozen=True):
    """``DevEUI_notification``: reset, join, battery status (SPEC.md §5.2)."""

    ROOT = "DevEUI_notification"
    KIND = "notification"

    dev_eui: DevEui = msgspec.field(name="DevEUI")
    lrcid: str | None = _f("Lrcid")
    dev_addr: str | None = _f("DevAddr")
    model_cfg: str | None = _f("ModelCfg")
    fcnt_dn: int | None = _f("FCntDn")
    type: str | None = _f("Type")
    var1: str | None = _f("Var1")
    var2: str | None = _f("Var2")


class Location(Report, kw_only=True, frozen=True):
    """``DevEUI_location``: a network-geolocation result (SPEC.md §5.3)."""

    ROOT = "DevEUI_location"
    KIND = "location"

    dev_eui: DevEui = msgspec.field(name="DevEUI")
    dev_addr: str | None = _f("DevAddr")
    lrcid: str | None = _f("Lrcid")
    nw_geoloc_algo: int | None = _f("NwGeolocAlgo")
    nw_geoloc_algo_used: int | None = _f("NwGeolocAlgoUsed")
    nw_geoloc_tdoa_opt: int | None = _f("NwGeolocTdoaOpt")
    dev_loc_time: str | None = _f("DevLocTime")
    dev_lat: Float | None = _f("DevLAT")
    dev_lon: Float | None = _f("DevLON")
    dev_alt: Float | None = _f("DevAlt")
    dev_acc: Float | None = _f("DevAcc")
    dev_loc_radius: Float | None = _f("DevLocRadius")
    dev_alt_radius: Float | None = _f("DevAltRadius")
    dev_ul_fcnt_up_used: int | None = _f("DevUlFCntUpUsed")
    dev_loc_dilution: Float | None = _f("DevLocDilution")
    dev_alt_dilution: Float | None = _f("DevAltDilution")
    dev_north_vel: Float | None = _f("DevNorthVel")
    dev_east_vel: Float | None = _f("DevEastVel")
    model_cfg: str | None = _f("ModelCfg")


class DownlinkSent(Report, kw_only=True, frozen=True):
    """``DevEUI_downlink_Sent``: what became of a downlink (SPEC.md §5.4)."""

    ROOT = "DevEUI_downlink_Sent"
    KIND = "downlink_sent"

    dev_eui: DevEui = msgspec.field(name="DevEUI")
    fport: int | None = _f("FPort")
    fcnt_dn: int | None = _f("FCntDn")
    fcnt_up: int | None = _f("FCntUp")
    lrcid: str | None = _f("Lrcid")
    spreading_factor: int | None = _f("SpFact")
    sub_band: str | None = _f("SubBand")
    channel: str | None = _f("Channel")
    lrrid: str | None = _f("Lrrid")
    relay_id: str | None = _f("Relayid")
    delivery_status: int | None = _f("DeliveryStatus")
    delivery_failed_cause1: str | None = _f("DeliveryFailedCause1")
    delivery_failed_cause2: str | None = _f("DeliveryFailedCause2")
    delivery_failed_cause3: str | None = _f("DeliveryFailedCause3")
    delivery_failed_cause4: str | None = _f("DeliveryFailedCause4")
    transmission_slot: int | None = _f("TransmissionSlot")
    frequency: Float | None = _f("Frequency")
    correlation_id: str | None = _f("CorrelationID")
    base_station_data: ObjectOrText | None = _f("BaseStationData")


class DownlinkRejected(Report, kw_only=True, frozen=True):
    """``DevEUI_downlink_Rejected``: the network refused a queued downlink (SPEC.md §5.5)."""

    ROOT = "DevEUI_downlink_Rejected"
    KIND = "downlink_rejected"

    dev_eui: DevEui = msgspec.field(name="DevEUI")
    fport: int | None = _f("FPort")
    delivery_status: int | None = _f("DeliveryStatus")
    downlink_rejection_cause: str | None = _f("DownlinkRejectionCause")
    correlation_id: str | None = _f("CorrelationID")


class MulticastSummary(Report, kw_only=True, frozen=True):
    """``DevEUI_multicast_summary``: the outcome of a multicast downlink (SPEC.md §5.6)."""

    ROOT = "DevEUI_multicast_summary"
    KIND = "multicast_summary"

    dev_eui: DevEui = msgspec.field(name="DevEUI")
    dev_addr: str | None = _f("DevAddr")
    fport: int | None = _f("FPort")
    fcnt_dn: int | None = _f("FCntDn")
    lrcid: str | None = _f("Lrcid")
    transmission_status: str | None = _f("TransmissionStatus")
    lrr_cnt: int | None = _f("LrrCnt")
    lrr_success_cnt: int | None = _f("LrrSuccessCnt")
    lrr_failed_cnt: int | None = _f("LrrFailedCnt")
    lrr_failed_distribution: str | None = _f("LrrFailedDistribution")
    correlation_id: str | None = _f("CorrelationID")


class _Alarm(Report, kw_only=True, frozen=True):
    """Fields shared by the two alarm reports (IoT Flow, TP 7.3+)."""

    id: int | None = _f("ID")
    state: int | None = _f("State")
    creation_time: str | None = _f("CreationTime")
    last_update_time: str | None = _f("LastUpdateTime")
    occurrence: int | None = _f("Occurrence")
    acked: int | None = _f("Acked")
    add_info1: str | None = _f("AddInfo1")
    add_info2: str | None = _f("AddInfo2")
    add_info3: str | None = _f("AddInfo3")


class DeviceAlarm(_Alarm, kw_only=True, frozen=True):
    """``DevEUI_alarm``: an alarm raised on a device."""

    ROOT = "DevEUI_alarm"
    KIND = "device_alarm"

    dev_eui: DevEui = msgspec.field(name="DevEUI")


class BaseStationAlarm(_Alarm, kw_only=True, frozen=True):
    """``BS_alarm``: an alarm raised on a base station (no DevEUI; ``LrrID`` instead)."""

    ROOT = "BS_alarm"
    KIND = "base_station_alarm"

    lrr_id: LrrId = msgspec.field(name="LrrID")
    partner_id: str | None = _f("PartnerID")
    base_station_data: ObjectOrText | None = _f("BaseStationData")


class DownlinkRequest(Document, kw_only=True, frozen=True):
    """``DevEUI_downlink``: a downlink as a document (MQTT / IoT Flow body, SPEC.md §4.5).

    Over the HTTPS tunnel a downlink travels as query parameters instead; see
    :mod:`tpas.protocol.downlink`.
    """

    ROOT = "DevEUI_downlink"
    KIND = "downlink"

    time: str | None = _f("Time")
    dev_eui: DevEui = msgspec.field(name="DevEUI")
    fport: int | None = _f("FPort")
    payload_hex: str | None = _f("payload_hex")
    payload: ObjectOrText | None = _f("payload")
    fcnt_dn: int | None = _f("FCntDn")
    afcnt_dn: int | None = _f("AFCntDn")
    confirmed: int | None = _f("Confirmed")
    flush_downlink_queue: int | None = _f("FlushDownlinkQueue")
    validity_time: str | None = _f("ValidityTime")
    correlation_id: str | None = _f("CorrelationID")
    retry_ineligible_gateways: int | None = _f("RetryIneligibleGateways")
    as_id: str | None = _f("AS_ID")
    as_key: str | None = _f("AS_KEY")
    driver_cfg: ObjectOrText | None = _f("DriverCfg")


REPORT_TYPES: Final[dict[str, type[Document]]] = {
    t.ROOT: t
    for t in (
        Uplink,
        Notification,
        Location,
        DownlinkSent,
        DownlinkRejected,
        MulticastSummary,
        DeviceAlarm,
        BaseStationAlarm,
        DownlinkRequest,
    )
}
"""Every document type tpas reads, by root key / element name."""


def parse_time(text: str | None) -> datetime | None:
    """Parse a ThingPark ISO-8601 time; ``None`` when absent or malformed.

    A time without an offset (seen in 2016-era examples) is taken as UTC.
    """
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
