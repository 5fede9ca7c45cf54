"""tpas: an application server for Actility ThingPark.

The curated public API; everything else is private to its module.
"""

from tpas.errors import (
    DocumentError,
    DownlinkParameterError,
    ForbiddenXmlError,
    InputError,
    TpasError,
)
from tpas.protocol import (
    AsKey,
    BodyFormat,
    Document,
    DownlinkParams,
    Reason,
    Recipe,
    Verdict,
    decode,
    encode,
    parse,
    sign_downlink,
    verify_report,
)

__version__ = "0.1.0"

__all__ = [
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
