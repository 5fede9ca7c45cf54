"""Settings read from TOML: the ``[server]`` admission limit (QUALITY.md REL-6)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from tpas.config import ServerSettings, parse_settings
from tpas.errors import ConfigError


def _server(text: str) -> ServerSettings:
    data: dict[str, Any] = tomllib.loads(text)
    return parse_settings(data, {}).server


def test_max_pending_reports_defaults_to_a_generous_limit() -> None:
    """Without the key, up to 1024 report requests may be in progress at once."""
    assert _server("[server]\n").max_pending_reports == 1024
    assert ServerSettings().max_pending_reports == 1024


def test_max_pending_reports_is_read_from_the_server_table() -> None:
    """``server.max_pending_reports`` sets the admission limit."""
    assert _server("[server]\nmax_pending_reports = 64\n").max_pending_reports == 64


@pytest.mark.parametrize(
    "value",
    ["0", "-5", "2.5", '"100"', "true"],
    ids=["zero", "negative", "fraction", "string", "boolean"],
)
def test_a_bad_max_pending_reports_is_refused_by_its_key(value: str) -> None:
    """A limit that is not a positive integer is refused with an error naming the key."""
    with pytest.raises(ConfigError) as caught:
        _server(f"[server]\nmax_pending_reports = {value}\n")
    assert caught.value.key == "server.max_pending_reports"
    assert "integer" in caught.value.detail
