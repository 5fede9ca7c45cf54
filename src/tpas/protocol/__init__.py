"""The pure protocol layer: ThingPark documents, codecs, report tokens, downlink signing.

Nothing here performs I/O, reads a clock, draws random numbers or reads the environment:
times, keys and randomness are arguments.
"""

from tpas.protocol.codec import decode, encode, format_for_content_type, parse, sniff_format
from tpas.protocol.document import BodyFormat, RawDocument, to_model, to_wire
from tpas.protocol.downlink import (
    DOWNLINK_PATH_V1,
    DOWNLINK_PATH_V2,
    DownlinkParams,
    SignedDownlink,
    format_time,
    sign_downlink,
)
from tpas.protocol.intake import Checked, check_report
from tpas.protocol.keys import AsKey, InvalidKeyError
from tpas.protocol.models import (
    REPORT_TYPES,
    BaseStationAlarm,
    DeviceAlarm,
    Document,
    DownlinkRejected,
    DownlinkRequest,
    DownlinkSent,
    Gateway,
    Location,
    Lrrs,
    MulticastSummary,
    Notification,
    Report,
    Uplink,
    parse_time,
)
from tpas.protocol.query import Query, parse_query
from tpas.protocol.token import (
    DEFAULT_RECIPES,
    SIGNED_PARAMETERS,
    BodyElement,
    Reason,
    Recipe,
    RecipeError,
    Verdict,
    body_elements,
    canonical_query,
    compute_token,
    verify_report,
)

__all__ = [
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
