"""Fixtures for the storage tests: one store per backend, PostgreSQL in a throwaway schema.

PostgreSQL tests use the shared server of :mod:`tests.pg` (``TPAS_TEST_POSTGRES_DSN``;
an empty string skips them). Each test gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from tests.pg import shared_dsn
from tpas.storage import MemoryStore, SqliteStore
from tpas.storage.ports import Store
from tpas.storage.postgres import PostgresStore

MakeStore = Callable[[], Store]
"""Builds a new, unopened store over the same underlying storage on every call."""


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The PostgreSQL server for the tests, or a skip when it is switched off."""
    return shared_dsn()


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` (a URL) with ``schema`` first in the search path."""
    options = quote(f"-c search_path={schema}", safe="")
    return f"{dsn}{'&' if '?' in dsn else '?'}options={options}"


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A URL whose search path is a fresh, empty schema (dropped after the test)."""
    schema = f"tpas_test_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_search_path(pg_dsn, schema)
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """A store factory for each backend; stores from one factory share their data."""
    if request.param == "memory":
        store = MemoryStore()  # the "database" is the instance itself
        return lambda: store
    if request.param == "sqlite":
        return lambda: SqliteStore(tmp_path / "tpas.db")
    dsn: str = request.getfixturevalue("pg_schema")
    return lambda: PostgresStore(dsn)
