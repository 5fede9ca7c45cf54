"""The curated public API is pinned: a change to it is a deliberate, reviewed change."""

from __future__ import annotations

import tpas
import tpas.protocol

TPAS_ALL = [
    "AsKey",
    "BodyFormat",
    "Document",
    "DocumentError",
    "DownlinkParameterError",
    "DownlinkParams",
    "ForbiddenXmlError",
    "InputError",
    "Reason",
    "Recipe",
    "TpasError",
    "Verdict",
    "__version__",
    "decode",
    "encode",
    "parse",
    "sign_downlink",
    "verify_report",
]

PROTOCOL_ALL = [
    "DEFAULT_RECIPES",
    "DOWNLINK_PATH_V1",
    "DOWNLINK_PATH_V2",
    "REPORT_TYPES",
    "SIGNED_PARAMETERS",
    "AsKey",
    "BaseStationAlarm",
    "BodyElement",
    "BodyFormat",
    "Checked",
    "DeviceAlarm",
    "Document",
    "DownlinkParams",
    "DownlinkRejected",
    "DownlinkRequest",
    "DownlinkSent",
    "Gateway",
    "InvalidKeyError",
    "Location",
    "Lrrs",
    "MulticastSummary",
    "Notification",
    "Query",
    "RawDocument",
    "Reason",
    "Recipe",
    "RecipeError",
    "Report",
    "SignedDownlink",
    "Uplink",
    "Verdict",
    "body_elements",
    "canonical_query",
    "check_report",
    "compute_token",
    "decode",
    "encode",
    "format_for_content_type",
    "format_time",
    "parse",
    "parse_query",
    "parse_time",
    "sign_downlink",
    "sniff_format",
    "to_model",
    "to_wire",
    "verify_report",
]


def _isort_order(names: list[str]) -> list[str]:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022 order)."""

    def key(name: str) -> tuple[int, str]:
        if name.isupper():
            return (0, name)
        return (1 if name[:1].isupper() else 2, name)

    return sorted(names, key=key)


def test_tpas_exports_exactly_the_curated_names() -> None:
    """tpas.__all__ is exactly the curated list, sorted."""
    assert tpas.__all__ == TPAS_ALL
    assert sorted(tpas.__all__) == tpas.__all__


def test_protocol_exports_exactly_the_curated_names() -> None:
    """tpas.protocol.__all__ is exactly the curated list, sorted constants-classes-functions."""
    assert tpas.protocol.__all__ == PROTOCOL_ALL
    assert _isort_order(tpas.protocol.__all__) == tpas.protocol.__all__


def test_every_exported_name_exists() -> None:
    """Every name in an __all__ is an attribute of its package."""
    for module in (tpas, tpas.protocol):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], module.__name__


def test_top_level_names_are_the_protocol_objects() -> None:
    """A name exported by both tpas and tpas.protocol is the same object in both."""
    shared = set(tpas.__all__) & set(tpas.protocol.__all__)
    assert shared
    for name in shared:
        assert getattr(tpas, name) is getattr(tpas.protocol, name), name
