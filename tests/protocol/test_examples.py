"""Every published example body decodes, and the published quirks are handled (SPEC.md §2.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from tpas.protocol import (
    BodyFormat,
    Document,
    DownlinkSent,
    Gateway,
    Location,
    Uplink,
    decode,
    encode,
    parse,
    parse_time,
)

EXAMPLES = {
    "base_station_alarm_report.json": "base_station_alarm",
    "device_alarm_report.json": "device_alarm",
    "downlink_frame.json": "downlink",
    "downlink_frame.xml": "downlink",
    "downlink_frame_2.json": "downlink",
    "downlink_frame_3.json": "downlink",
    "downlink_frame_rejected.json": "downlink_rejected",
    "downlink_frame_sent_report.json": "downlink_sent",
    "downlink_frame_sent_report.xml": "downlink_sent",
    "downlink_frame_sent_report_2.json": "downlink_sent",
    "location_report.json": "location",
    "location_report.xml": "location",
    "location_report_2.json": "location",
    "location_report_3.xml": "location",
    "multicast_summary_report.json": "multicast_summary",
    "notification_report.json": "notification",
    "notification_report.xml": "notification",
    "notification_report_2.json": "notification",
    "notification_report_3.json": "notification",
    "uplink_frame.json": "uplink",
    "uplink_frame.xml": "uplink",
    "uplink_frame_2.json": "uplink",
    "uplink_frame_2.xml": "uplink",
    "uplink_frame_3.json": "uplink",
    "uplink_frame_4.json": "uplink",
    "uplink_frame_4.xml": "uplink",
    "uplink_frame_5.json": "uplink",
    "uplink_frame_6.json": "uplink",
    "uplink_frame_7.json": "uplink",
    "uplink_frame_8.json": "uplink",
    "uplink_frame_decoded.json": "uplink",
    "uplink_join_request.json": "join_request",
}
PAIRS = ["notification_report", "location_report", "downlink_frame", "downlink_frame_sent_report"]


def _decode(fixtures_dir: Path, name: str) -> Document:
    return decode((fixtures_dir / name).read_bytes())


def test_example_table_lists_every_example_file(fixtures_dir: Path) -> None:
    """Every example body in the fixtures (templates and vectors aside) is decoded below."""
    found = {
        path.name
        for pattern in ("*.json", "*.xml")
        for path in fixtures_dir.glob(pattern)
        if "template" not in path.name and path.name != "token_test_vectors.json"
    }
    assert found == set(EXAMPLES)


@pytest.mark.parametrize(("name", "kind"), EXAMPLES.items(), ids=list(EXAMPLES))
def test_example_decodes_to_its_kind(fixtures_dir: Path, name: str, kind: str) -> None:
    """An example body decodes, format sniffed, to the model of its root with its kind."""
    body = (fixtures_dir / name).read_bytes()
    raw = parse(body)
    model = decode(body)
    assert raw.format is (BodyFormat.XML if name.endswith(".xml") else BodyFormat.JSON)
    assert raw.root == model.ROOT
    assert model.kind == kind


@pytest.mark.parametrize("fmt", list(BodyFormat), ids=[f.value for f in BodyFormat])
@pytest.mark.parametrize("name", list(EXAMPLES), ids=list(EXAMPLES))
def test_example_survives_reencoding(fixtures_dir: Path, name: str, fmt: BodyFormat) -> None:
    """An example decoded, encoded in any format and decoded again gives the same model."""
    model = _decode(fixtures_dir, name)
    assert decode(encode(model, fmt), fmt) == model


@pytest.mark.parametrize("stem", PAIRS, ids=PAIRS)
def test_json_and_xml_examples_decode_equal(fixtures_dir: Path, stem: str) -> None:
    """The JSON and XML renderings of the same published report decode to equal models."""
    assert _decode(fixtures_dir, f"{stem}.json") == _decode(fixtures_dir, f"{stem}.xml")


def _set_fields(model: Document) -> dict[str, Any]:
    return {
        field.name: getattr(model, field.name)
        for field in msgspec.structs.fields(model)
        if getattr(model, field.name) not in (None, {})
    }


def test_uplink_xml_example_is_a_superset_of_the_json_one(fixtures_dir: Path) -> None:
    """Every field the uplink JSON example sets has the same value in the richer XML one."""
    from_json = _decode(fixtures_dir, "uplink_frame.json")
    from_xml = _decode(fixtures_dir, "uplink_frame.xml")
    json_fields = _set_fields(from_json)
    xml_fields = _set_fields(from_xml)

    assert len(json_fields) > 20
    assert {name: xml_fields.get(name) for name in json_fields} == json_fields
    assert set(xml_fields) > set(json_fields)


def test_xmlns_key_of_json_example_is_ignored(fixtures_dir: Path) -> None:
    """The "-xmlns" key of Actility's JSON sample is an artifact, not kept as a field."""
    body = (fixtures_dir / "uplink_frame.json").read_bytes()
    assert "-xmlns" in parse(body).fields
    model = decode(body)
    assert model.extra == {}
    assert b"xmlns" not in encode(model, BodyFormat.JSON)


@pytest.mark.parametrize("name", ["location_report.json", "location_report.xml"])
def test_malformed_body_time_is_kept_as_text(fixtures_dir: Path, name: str) -> None:
    """A body Time that is not ISO-8601 stays as the published text instead of failing."""
    model = _decode(fixtures_dir, name)
    assert isinstance(model, Location)
    assert model.time == "2015-01-27T10:00.123:46+01:00"
    assert parse_time(model.time) is None
    assert "Time" not in model.extra


def test_join_request_spfact_is_the_spreading_factor(fixtures_dir: Path) -> None:
    """The join example's "Spfact" key is read as the spreading factor of a join_request."""
    model = _decode(fixtures_dir, "uplink_join_request.json")
    assert isinstance(model, Uplink)
    assert model.kind == "join_request"
    assert model.spreading_factor == 12
    assert model.raw_join_request == "003246524144b21800200b000000b2180052ff36f5e390"
    assert model.airtime == pytest.approx(1.482752)
    assert model.extra == {}


@pytest.mark.parametrize(
    "name", ["uplink_frame_4.json", "uplink_frame_2.xml", "uplink_frame_7.json"]
)
def test_single_gateway_is_still_a_list(fixtures_dir: Path, name: str) -> None:
    """An uplink received by one gateway has a one-element gateway list."""
    model = _decode(fixtures_dir, name)
    assert isinstance(model, Uplink)
    assert isinstance(model.gateways, list)
    assert len(model.gateways) == 1
    assert isinstance(model.gateways[0], Gateway)


def test_gateways_are_typed(fixtures_dir: Path) -> None:
    """Gateway entries of an untyped example are read as numbers where the model says so."""
    model = _decode(fixtures_dir, "uplink_frame_3.json")
    assert isinstance(model, Uplink)
    assert model.gateways == [
        Gateway(lrrid="080603DB", chain=0, rssi=-100.0, snr=5.75, esp=-101.02459),
        Gateway(lrrid="080E00C8", chain=0, rssi=-118.0, snr=-4.0, esp=-123.455406),
        Gateway(lrrid="080602C9", chain=0, rssi=-119.0, snr=-9.5, esp=-128.961838),
    ]


@pytest.mark.parametrize("fmt", list(BodyFormat), ids=[f.value for f in BodyFormat])
def test_unknown_fields_are_kept_and_written_back(fixtures_dir: Path, fmt: BodyFormat) -> None:
    """An unknown field (payloadDecodedError) is kept in extra and written back by encode."""
    model = _decode(fixtures_dir, "uplink_frame_7.json")
    error = {"code": "com-5002", "message": "driver internal error: Error: Invalid fPort!"}
    assert model.extra == {"payloadDecodedError": error}

    body = encode(model, fmt)

    assert b"payloadDecodedError" in body
    assert decode(body, fmt).extra == {"payloadDecodedError": error}


def test_untyped_example_reads_numbers_from_text(fixtures_dir: Path) -> None:
    """Untyped JSON numbers given as text, and its bare TxPower/NbTrans, become numbers."""
    model = _decode(fixtures_dir, "uplink_frame_4.json")
    assert isinstance(model, Uplink)
    assert (model.fport, model.fcnt_up, model.fcnt_dn, model.mtype) == (1, 0, 0, 2)
    assert (model.rssi, model.snr, model.lrr_lat) == (-61.0, 7.0, 43.640781)
    assert (model.tx_power, model.nb_trans) == (14.0, 1)
    assert model.customer_id == "100122002"
    assert model.raw_mac_commands == ""
    assert model.extra == {}


def test_untyped_encoding_writes_text_except_txpower_and_nbtrans(fixtures_dir: Path) -> None:
    """Untyped JSON output carries text values, bare TxPower/NbTrans and objects as objects."""
    model = _decode(fixtures_dir, "uplink_frame_4.json")
    fields = msgspec.json.decode(encode(model, BodyFormat.JSON_UNTYPED))["DevEUI_uplink"]
    assert fields["FPort"] == "1"
    assert fields["LrrRSSI"] == "-61.0"
    assert fields["TxPower"] == 14.0
    assert fields["NbTrans"] == 1
    assert fields["CustomerData"] == {"alr": {"pro": "LORA/Generic", "ver": "1"}}
    assert all(isinstance(value, str) for value in fields["Lrrs"]["Lrr"][0].values())


def test_typed_encoding_writes_numbers(fixtures_dir: Path) -> None:
    """Typed JSON output carries numeric fields as JSON numbers and identifiers as text."""
    model = _decode(fixtures_dir, "uplink_frame_4.json")
    fields = msgspec.json.decode(encode(model, BodyFormat.JSON))["DevEUI_uplink"]
    assert fields["FPort"] == 1
    assert fields["LrrRSSI"] == -61.0
    assert fields["Lrrs"] == {
        "Lrr": [
            {"Lrrid": "C000146F", "Chain": 0, "LrrRSSI": -61.0, "LrrSNR": 7.0, "LrrESP": -61.790096}
        ]
    }
    assert fields["CustomerID"] == "100122002"


def test_sent_report_json_typo_and_escaped_customer_data_are_repaired(
    fixtures_dir: Path,
) -> None:
    """The sent-report JSON's "</DevEUI" typo is dropped and its CustomerData text parsed."""
    body = (fixtures_dir / "downlink_frame_sent_report.json").read_bytes()
    assert parse(body).fields["DevEUI"] == "000000000F1D8693</DevEUI"
    model = decode(body)
    assert isinstance(model, DownlinkSent)
    assert model.dev_eui == "000000000F1D8693"
    assert model.customer_data == {
        "loc": {"lat": "43.58081", "lon": "1.4421667"},
        "alr": {"pro": "STL", "ver": "1"},
    }
    assert model.delivery_status == 1


def test_customer_data_that_is_not_json_stays_text(fixtures_dir: Path) -> None:
    """CustomerData written with single quotes (not JSON) is kept as the published text."""
    model = _decode(fixtures_dir, "uplink_frame_2.xml")
    assert isinstance(model, Uplink)
    assert model.customer_data == "{'alr':{'pro':'LORA/Generic','ver':'1'}}"


def test_lower_case_dev_eui_is_accepted_as_published(fixtures_dir: Path) -> None:
    """A lower-case DevEUI (TPX location example) is valid and kept as published."""
    model = _decode(fixtures_dir, "location_report_2.json")
    assert isinstance(model, Location)
    assert model.dev_eui == model.dev_eui.lower()
