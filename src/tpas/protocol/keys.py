"""The Tunnel Interface Authentication Key (TIAK, "AS key"), wrapped so it never prints."""

from __future__ import annotations

import hashlib
import re
from typing import Final

from tpas.errors import InputError

__all__ = ["AsKey", "InvalidKeyError"]

_HEX32: Final = re.compile(r"[0-9A-Fa-f]{32}")


class InvalidKeyError(InputError):
    """A configured key is not 32 hex digits. The message never repeats the value."""

    reason = "invalid_key"


class AsKey:
    """An AS key (32 hex digits, SPEC.md §1). ``repr`` and ``str`` show a fingerprint only.

    The case is kept as configured: one published vector verifies only with its capital
    letter kept (SPEC.md §9.2); verification also tries the lower-cased form.
    """

    __slots__ = ("_value", "variants")

    def __init__(self, value: str) -> None:
        if not _HEX32.fullmatch(value):
            raise InvalidKeyError(f"an AS key must be 32 hex digits (got {len(value)} characters)")
        self._value = value
        # The forms verification tries, as bytes: as configured, then lower-cased.
        lower = value.lower()
        self.variants: tuple[bytes, ...] = (
            (value.encode(), lower.encode()) if lower != value else (value.encode(),)
        )

    def reveal(self) -> str:
        """The key itself, for hashing. Never log or print it."""
        return self._value

    @property
    def fingerprint(self) -> str:
        """A short, non-reversible identifier for logs: 8 hex digits of SHA-256(key)."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"AsKey(fingerprint={self.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
