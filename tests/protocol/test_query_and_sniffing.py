"""Query parsing, format sniffing and time parsing: the small front-door helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tpas.protocol import BodyFormat, format_for_content_type, parse_query, parse_time, sniff_format

QUERIES = [
    pytest.param("Time=10:00+01:00", {"Time": "10:00+01:00"}, id="plus-kept-as-plus"),
    pytest.param("Time=10%3A00%2B01%3A00", {"Time": "10:00+01:00"}, id="percent-decoded"),
    pytest.param("?a=1&b=2", {"a": "1", "b": "2"}, id="leading-question-mark"),
    pytest.param("a=1&&b=2&", {"a": "1", "b": "2"}, id="empty-parts-skipped"),
    pytest.param("a=b=c", {"a": "b=c"}, id="split-on-first-equals"),
    pytest.param("flag", {"flag": ""}, id="name-without-value"),
    pytest.param("L%72nInfos=x", {"LrnInfos": "x"}, id="encoded-name"),
    pytest.param("", {}, id="empty"),
]


@pytest.mark.parametrize(("raw", "values"), QUERIES)
def test_query_values_are_percent_decoded_keeping_plus(raw: str, values: dict[str, str]) -> None:
    """Query values are split on '&' and the first '=', percent-decoded, '+' kept."""
    query = parse_query(raw)
    assert query.values == values
    assert query.repeated == frozenset()


def test_repeated_query_names_are_reported() -> None:
    """A name given twice is listed as repeated; the last value is kept."""
    query = parse_query("a=1&b=2&a=3")
    assert query.repeated == frozenset({"a"})
    assert query.values == {"a": "3", "b": "2"}


SNIFFED = [
    pytest.param(b"<DevEUI_uplink/>", BodyFormat.XML, id="xml"),
    pytest.param(b" \r\n\t<?xml version='1.0'?>", BodyFormat.XML, id="xml-after-blanks"),
    pytest.param(b"\xef\xbb\xbf<DevEUI_uplink/>", BodyFormat.XML, id="xml-after-bom"),
    pytest.param(b'{"DevEUI_uplink": {}}', BodyFormat.JSON, id="json"),
    pytest.param(b"\xef\xbb\xbf {}", BodyFormat.JSON, id="json-after-bom"),
    pytest.param(b"", BodyFormat.JSON, id="empty"),
]


@pytest.mark.parametrize(("body", "fmt"), SNIFFED)
def test_format_is_sniffed_from_the_first_significant_byte(body: bytes, fmt: BodyFormat) -> None:
    """A body whose first byte after blanks and BOM is '<' is XML, anything else JSON."""
    assert sniff_format(body) is fmt


CONTENT_TYPES = [
    pytest.param("application/json", BodyFormat.JSON, id="json"),
    pytest.param("Application/JSON; charset=UTF-8", BodyFormat.JSON, id="json-params-case"),
    pytest.param("application/vnd.actility+json", BodyFormat.JSON, id="json-suffix"),
    pytest.param("application/xml", BodyFormat.XML, id="application-xml"),
    pytest.param("text/xml; charset=utf-8", BodyFormat.XML, id="text-xml"),
    pytest.param("application/atom+xml", BodyFormat.XML, id="xml-suffix"),
    pytest.param("text/plain", None, id="text-plain"),
    pytest.param("", None, id="empty"),
]


@pytest.mark.parametrize(("content_type", "fmt"), CONTENT_TYPES)
def test_content_type_announces_a_format(content_type: str, fmt: BodyFormat | None) -> None:
    """JSON and XML media types (and +json/+xml suffixes) map to a format, others to None."""
    assert format_for_content_type(content_type) is fmt


TIMES = [
    pytest.param(
        "2016-01-11T14:11:11.333+02:00",
        datetime(2016, 1, 11, 14, 11, 11, 333000, tzinfo=timezone(timedelta(hours=2))),
        id="offset",
    ),
    pytest.param("2016-01-11T14:11:11", datetime(2016, 1, 11, 14, 11, 11, tzinfo=UTC), id="naive"),
    pytest.param("2016-01-11T14:11:11Z", datetime(2016, 1, 11, 14, 11, 11, tzinfo=UTC), id="z"),
    pytest.param("2015-01-27T10:00.123:46+01:00", None, id="actility-typo"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="absent"),
]


@pytest.mark.parametrize(("text", "moment"), TIMES)
def test_times_parse_when_the_text_allows(text: str | None, moment: datetime | None) -> None:
    """parse_time reads ISO-8601 (no offset meaning UTC) and gives None for anything else."""
    assert parse_time(text) == moment
