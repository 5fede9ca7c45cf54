"""The frame key: the stored identity of the frame or event a report describes (SEC-5).

It is a unique key of every stored report, so it must never change for the same report:
a frame delivered again after an upgrade must still be found as a duplicate.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tpas.errors import InputError
from tpas.protocol import Document, decode
from tpas.services.ingest import frame_key, new_report

FIXTURES = Path(__file__).parent / "fixtures"
FRAME_FIELDS = (
    "time", "fcnt_up", "fcnt_dn", "fport", "payload_hex", "raw_join_request", "type", "var1",
    "var2", "delivery_status", "correlation_id", "transmission_status", "id", "state",
    "last_update_time", "dev_loc_time", "dev_lat", "dev_lon",
)  # fmt: skip


def _models() -> list[tuple[str, Document]]:
    found = []
    for path in sorted(FIXTURES.rglob("*")):
        if path.suffix not in (".json", ".xml") or "hostile" in path.parts:
            continue
        try:
            found.append((path.name, decode(path.read_bytes())))
        except InputError:
            continue  # templates and deliberately broken examples
    return found


MODELS = _models()


def test_every_report_type_of_the_examples_is_covered() -> None:
    """The examples hold reports of several types, so the test below sees each reader."""
    assert len({type(model) for _, model in MODELS}) >= 5


@pytest.mark.parametrize(("name", "model"), MODELS, ids=[name for name, _ in MODELS])
def test_the_frame_key_is_the_digest_of_the_frame_fields(name: str, model: Document) -> None:
    """The frame key is SHA-256 over the root, the identity and the repr of each frame field
    (None where the type has no such field), joined by U+001F, cut to 40 hex digits."""
    identity = getattr(model, "dev_eui", None) or getattr(model, "lrr_id", "")
    parts = [model.ROOT, str(identity).upper()]
    parts += [repr(getattr(model, field, None)) for field in FRAME_FIELDS]
    expected = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    assert frame_key(model) == expected
    assert new_report("app", model, "AB", b"", "x", 1.0).frame_key == expected


@pytest.mark.parametrize(("name", "model"), MODELS, ids=[name for name, _ in MODELS])
def test_the_stored_columns_are_the_model_values(name: str, model: Document) -> None:
    """new_report reads each column off the model (None where the type has no such field)."""

    def value(field: str) -> object:
        return getattr(model, field, None)

    report = new_report("app", model, "AB", b"{}", "application/json", 1.0)
    dev_eui = value("dev_eui")
    assert report.dev_eui == (str(dev_eui).upper() if dev_eui else None)
    assert report.time == (value("time") or value("creation_time"))
    assert report.kind == model.kind
    assert (report.token, report.body, report.content_type) == ("ab", b"{}", "application/json")
    columns = (
        report.fport, report.fcnt_up, report.fcnt_dn, report.payload_hex, report.rssi,
        report.snr, report.spreading_factor, report.lat, report.lon, report.correlation_id,
    )  # fmt: skip
    fields = (
        "fport", "fcnt_up", "fcnt_dn", "payload_hex", "rssi", "snr", "spreading_factor",
        "dev_lat", "dev_lon", "correlation_id",
    )  # fmt: skip
    assert columns == tuple(value(field) for field in fields)
