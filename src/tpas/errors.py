"""The tpas exception tree.

Branches follow what the caller can do about an error::

    TpasError
    └── InputError                 reject the input: a 4xx answer, a CLI exit code 2
        ├── DocumentError          a report body that cannot be read (400)
        │   └── ForbiddenXmlError  XML with a DTD, entities or a foreign encoding (400)
        └── DownlinkParameterError a downlink request outside SPEC.md §4.2 (422)

Every error carries a stable ``reason`` code (used in HTTP error bodies and metrics) and
the data needed to explain it; none carries a key or a token.
"""

from __future__ import annotations

__all__ = [
    "DocumentError",
    "DownlinkParameterError",
    "ForbiddenXmlError",
    "InputError",
    "TpasError",
]


class TpasError(Exception):
    """The root of every error tpas raises on purpose."""

    reason: str = "error"


class InputError(TpasError):
    """Input from outside (a request, a file, a command line) is not acceptable."""

    reason = "bad_input"


class DocumentError(InputError):
    """A report document cannot be read.

    ``path`` names the offending field as ``Root.Field`` (or just the root, or ``""`` when
    the document has no usable root at all).
    """

    reason = "malformed_document"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.detail = message


class ForbiddenXmlError(DocumentError):
    """XML that tpas refuses to parse: DTDs, entity declarations, non-UTF-8 encodings."""

    reason = "forbidden_xml"


class DownlinkParameterError(InputError):
    """A downlink parameter does not match ThingPark's published format (SPEC.md §4.2)."""

    reason = "invalid_downlink_parameter"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message
