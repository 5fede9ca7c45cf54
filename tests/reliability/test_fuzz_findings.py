"""Inputs the fuzzer found that once escaped the tpas error tree or lost a report, pinned."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tpas.errors import DocumentError
from tpas.protocol import AsKey, BodyFormat, Uplink, check_report, decode, encode

FORMATS = list(BodyFormat)
NOT_UTF8 = b'{"DevEUI_uplink": {"DevEUI": "0059AC0000000001", "CustomerID": "\x80"}}'


@pytest.mark.parametrize("fmt", FORMATS, ids=[fmt.value for fmt in FORMATS])
def test_a_body_that_is_not_utf8_is_a_document_error(fmt: BodyFormat) -> None:
    """JSON holding bytes that are not UTF-8 is refused as a document, in every path."""
    with pytest.raises(DocumentError):
        decode(NOT_UTF8, fmt)
    with pytest.raises(DocumentError):
        check_report(
            NOT_UTF8,
            fmt,
            "LrnDevEui=0059AC0000000001&LrnFPort=0&LrnInfos=x&AS_ID=a&Time=2026-01-01T00:00:00Z&Token=00",
            [AsKey("0f1e2d3c4b5a69788796a5b4c3d2e1f0")],
            now=datetime(2026, 1, 1, tzinfo=UTC),
            max_drift=60,
        )


ODD_GATEWAY_LISTS = [
    '{"Lrr": "text"}',
    '{"Lrr": null}',
    '{"Lrr": [1, 2]}',
    '{"Lsr": [{"Lrrid": "1000050A"}]}',
    '"one gateway"',
]


@pytest.mark.parametrize("lrrs", ODD_GATEWAY_LISTS)
def test_a_gateway_list_of_another_shape_is_kept_not_fatal(lrrs: str) -> None:
    """An uplink whose (unsigned) gateway list has an odd shape is read, the list kept aside."""
    body = f'{{"DevEUI_uplink": {{"DevEUI": "0059AC0000000001", "Lrrs": {lrrs}}}}}'.encode()

    model = decode(body, BodyFormat.JSON)

    assert isinstance(model, Uplink)
    assert model.dev_eui == "0059AC0000000001"
    assert model.lrrs is None
    assert "Lrrs" in model.extra


@pytest.mark.parametrize("lrrs", ODD_GATEWAY_LISTS)
@pytest.mark.parametrize("fmt", FORMATS, ids=[fmt.value for fmt in FORMATS])
def test_a_gateway_list_of_another_shape_survives_every_format(lrrs: str, fmt: BodyFormat) -> None:
    """Writing such an uplink in any format and reading it back twice gives a fixed point."""
    body = f'{{"DevEUI_uplink": {{"DevEUI": "0059AC0000000001", "Lrrs": {lrrs}}}}}'.encode()
    model = decode(body, BodyFormat.JSON)
    assert isinstance(model, Uplink)

    once = decode(encode(model, fmt), fmt)
    twice = decode(encode(once, fmt), fmt)

    assert once == twice
    assert isinstance(once, Uplink)
    assert once.dev_eui == model.dev_eui
    if fmt is BodyFormat.JSON:
        assert once == model
