"""The tpas exception tree.

Branches follow what the caller can do about an error::

    TpasError
    ├── InputError                 reject the input: a 4xx answer, a CLI exit code 2
    │   ├── DocumentError          a report body that cannot be read (400)
    │   │   └── ForbiddenXmlError  XML with a DTD, entities or a foreign encoding (400)
    │   ├── DownlinkParameterError a downlink request outside SPEC.md §4.2 (422)
    │   └── ConfigError            a configuration value that cannot be used (refuse to start)
    └── TransientError             retry later
        ├── StorageUnavailable     the database cannot commit now (spool, or 503)
        └── NetworkError           no answer from the network server (retry the downlink)

Branches defined next to their only raiser: ``InvalidKeyError`` and ``RecipeError``
(InputError, :mod:`tpas.protocol`), ``UnknownApplicationError`` (InputError, 404,
:mod:`tpas.services.outbox`), ``ApiCallError`` (InputError, :mod:`tpas.cli.downlink`).

Every error carries a stable ``reason`` code (used in HTTP error bodies and metrics) and
the data needed to explain it; none carries a key or a token.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DocumentError",
    "DownlinkParameterError",
    "ForbiddenXmlError",
    "InputError",
    "NetworkError",
    "StorageUnavailable",
    "TpasError",
    "TransientError",
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


class ConfigError(InputError):
    """A configuration value that cannot be used; ``key`` names it (``applications[0].as_id``).

    The message never repeats a secret value.
    """

    reason = "invalid_config"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.detail = message


class TransientError(TpasError):
    """Something outside tpas failed in a way that may pass: retry later."""

    reason = "transient"


class StorageUnavailable(TransientError):  # noqa: N818 - names the condition
    """The store cannot commit (connection lost, disk full, I/O error)."""

    reason = "storage_unavailable"


class NetworkError(TransientError):
    """A peer did not answer: connection refused or reset, DNS failure, timeout."""

    reason = "network_error"
