"""``tpas decode``, run as a real process over every published example."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from tpas.protocol import BodyFormat, decode

if TYPE_CHECKING:
    from tests.cli.conftest import RunTpas

FIXTURES: Final = Path(__file__).parents[1] / "fixtures"
BODIES: Final = sorted(
    p
    for p in FIXTURES.iterdir()
    if p.suffix in {".json", ".jsonc", ".xml"} and p.stem != "token_test_vectors"
)
# KPN's templates hold placeholders ("XXXXXXXXXXXXXXXX") and comments: not real reports.
EXAMPLES: Final = [p for p in BODIES if "template" not in p.name]
TEMPLATES: Final = [p for p in BODIES if "template" in p.name]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_prints_as_pretty_typed_json(path: Path, tpas: RunTpas) -> None:
    """Every example decodes to pretty typed JSON that reads back as the same model."""
    run = tpas("decode", str(path))
    assert (run.code, run.err) == (0, "")
    assert run.out.startswith("{\n  ")
    assert decode(run.stdout_bytes, BodyFormat.JSON) == decode(path.read_bytes())


@pytest.mark.parametrize("target", [BodyFormat.XML, BodyFormat.JSON_UNTYPED], ids=str)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_converts_and_reads_back(path: Path, target: BodyFormat, tpas: RunTpas) -> None:
    """Every example converted with --to reads back as the same model."""
    run = tpas("decode", str(path), "--to", target.value)
    assert (run.code, run.err) == (0, "")
    assert decode(run.stdout_bytes) == decode(path.read_bytes())


def test_typed_json_conversion_is_compact(tpas: RunTpas) -> None:
    """--to json prints the compact typed rendering, one line."""
    path = FIXTURES / "uplink_frame.xml"
    run = tpas("decode", str(path), "--to", "json")
    assert run.code == 0
    assert run.out.count("\n") == 1
    assert decode(run.stdout_bytes, BodyFormat.JSON) == decode(path.read_bytes())


def test_stdin_with_explicit_format(tpas: RunTpas) -> None:
    """FILE ``-`` reads stdin, and --from names its format."""
    body = (FIXTURES / "notification_report.xml").read_bytes()
    run = tpas("decode", "-", "--from", "xml", stdin=body)
    assert (run.code, run.err) == (0, "")
    assert decode(run.stdout_bytes) == decode(body)


def _assert_one_line_error(run_code: int, out: str, err: str, start: str) -> None:
    assert run_code == 2
    assert out == ""
    assert err.startswith(start), err
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            b'{"DevEUI_uplink": {"DevEUI": "not-a-deveui", "FPort": 2}}',
            "tpas: DevEUI_uplink.DevEUI: Expected `str` matching",
            id="json-bad-deveui",
        ),
        pytest.param(
            b'{"DevEUI_location": {"Time": "2016-01-11T14:11:11+02:00"}}',
            "tpas: DevEUI_location.DevEUI: required field is missing",
            id="json-missing-deveui",
        ),
        pytest.param(
            b'<DevEUI_notification xmlns="http://uri.actility.com/lora">'
            b"<DevEUI>0011</DevEUI></DevEUI_notification>",
            "tpas: DevEUI_notification.DevEUI: Expected `str` matching",
            id="xml-bad-deveui",
        ),
        pytest.param(
            b'{"BS_alarm": {"LrrID": "G"}}',
            "tpas: BS_alarm.LrrID: Expected `str` matching",
            id="bad-lrrid",
        ),
        pytest.param(
            b'{"DevEUI_whatever": {}}', "tpas: DevEUI_whatever: unknown report type", id="root"
        ),
        pytest.param(b'{"DevEUI_uplink": ', "tpas: not valid JSON", id="truncated-json"),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "a">]><DevEUI_uplink/>',
            "tpas: DTDs and entity declarations are not accepted",
            id="xml-dtd",
        ),
    ],
)
def test_bad_document_exits_2_naming_the_field(
    body: bytes, message: str, tpas: RunTpas, tmp_path: Path
) -> None:
    """A document that cannot be read exits 2 with one line naming the field path."""
    path = tmp_path / "body"
    path.write_bytes(body)
    run = tpas("decode", str(path))
    _assert_one_line_error(run.code, run.out, run.err, message)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_is_refused_cleanly(path: Path, tpas: RunTpas) -> None:
    """A KPN template (placeholders, comments) exits 2 with a one-line reason."""
    run = tpas("decode", str(path))
    _assert_one_line_error(run.code, run.out, run.err, "tpas: ")


def test_format_mismatch_exits_2(tpas: RunTpas) -> None:
    """--from json on an XML body exits 2 rather than guessing."""
    run = tpas("decode", str(FIXTURES / "uplink_frame.xml"), "--from", "json")
    _assert_one_line_error(run.code, run.out, run.err, "tpas: not valid JSON")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("missing.json", "No such file or directory", id="missing"),
        pytest.param(".", "Is a directory", id="directory"),
    ],
)
def test_unreadable_file_exits_2(name: str, reason: str, tpas: RunTpas) -> None:
    """A file that cannot be read exits 2 saying which and why."""
    run = tpas("decode", name)
    _assert_one_line_error(run.code, run.out, run.err, f"tpas: cannot read {name}: {reason}")
