"""Report storage: the port, its adapters, and :func:`open_store` to pick one by URL.

======================================  =============================================
``sqlite:///relative/path.db``          :class:`SqliteStore` (path relative to the cwd)
``sqlite:////absolute/path.db``         :class:`SqliteStore`
``postgresql://user@host:5432/db``      ``tpas.storage.postgres.PostgresStore`` (also
                                        ``postgres://``)
``memory://``                           :class:`MemoryStore` (nothing durable)
======================================  =============================================

``PostgresStore`` is not imported here: psycopg takes ~0.2 s to import, which every CLI
command and SQLite-only process would otherwise pay. Import it from
``tpas.storage.postgres``, or let :func:`open_store` load it.
"""

from __future__ import annotations

import re
from typing import Final

from tpas.errors import ConfigError
from tpas.storage.memory import MemoryStore
from tpas.storage.ports import (
    DeviceSummary,
    NewReport,
    ReportQuery,
    ReportStore,
    Store,
    StoredReport,
    StoreOutcome,
)
from tpas.storage.sqlite import SqliteStore

__all__ = [
    "DeviceSummary",
    "MemoryStore",
    "NewReport",
    "ReportQuery",
    "ReportStore",
    "SqliteStore",
    "StoreOutcome",
    "StoredReport",
    "mask_password",
    "open_store",
]

_KEY: Final = "storage.url"
_EXPECTED: Final = (
    "expected sqlite:///relative/path.db, sqlite:////absolute/path.db, "
    "postgresql://user@host:5432/dbname or memory://"
)
_USERINFO_PASSWORD: Final = re.compile(r"(?<=://)([^:/?#@]*):[^@]*@")
# password=... in a URL query or a key=value string, where it may be quoted.
_PARAMETER_PASSWORD: Final = re.compile(
    r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&#\s]*)", re.IGNORECASE
)


def open_store(url: str) -> Store:
    """The store that ``url`` names, not opened yet.

    Raises :class:`~tpas.errors.ConfigError` (key ``storage.url``) for a URL it cannot
    use; the message never shows a password.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator:
        raise ConfigError(_KEY, f"{mask_password(url)!r} is not a storage URL; {_EXPECTED}")
    if scheme == "memory":
        if rest:
            raise ConfigError(_KEY, f"memory:// takes nothing after it; {_EXPECTED}")
        return MemoryStore()
    if scheme == "sqlite":
        return SqliteStore(_sqlite_path(url, rest))
    if scheme in ("postgresql", "postgres"):
        _check_postgres(url)
        from tpas.storage.postgres import PostgresStore

        return PostgresStore(url)
    raise ConfigError(_KEY, f"unsupported storage scheme {scheme!r}; {_EXPECTED}")


def mask_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    url = _USERINFO_PASSWORD.sub(r"\1:***@", url)
    return _PARAMETER_PASSWORD.sub(r"\1***", url)


def _sqlite_path(url: str, rest: str) -> str:
    # sqlite:///a.db leaves "/a.db": the empty host, then the path; a fourth slash makes
    # the path absolute (the SQLAlchemy convention).
    if not rest.startswith("/"):
        raise ConfigError(_KEY, f"{url!r} names a host; SQLite URLs have none (sqlite:///path.db)")
    path = rest[1:]
    if not path or path.endswith("/"):
        raise ConfigError(_KEY, f"{url!r} names no database file; {_EXPECTED}")
    if "?" in path or "#" in path:
        raise ConfigError(_KEY, f"{url!r}: SQLite URLs take no query or fragment")
    return path


def _check_postgres(url: str) -> None:
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except Error as exc:
        masked = mask_password(url)
        if masked == url:
            raise ConfigError(_KEY, f"cannot parse PostgreSQL URL {url!r}: {exc}") from exc
        # libpq's message may quote a fragment of the URL, password included, so neither
        # it nor the chained exception may travel.
        raise ConfigError(_KEY, f"cannot parse PostgreSQL URL {masked!r}") from None
