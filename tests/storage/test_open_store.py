"""open_store: storage URLs to unopened stores, and clear errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import tpas.storage
from tpas.errors import ConfigError
from tpas.storage import MemoryStore, SqliteStore, mask_password, open_store
from tpas.storage.postgres import PostgresStore


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///tpas.db", Path("tpas.db")),
        ("sqlite:///data/tpas.db", Path("data/tpas.db")),
        ("sqlite:////var/lib/tpas/tpas.db", Path("/var/lib/tpas/tpas.db")),
        ("SQLite:///tpas.db", Path("tpas.db")),
    ],
    ids=["relative", "relative-directory", "absolute", "scheme-case"],
)
def test_sqlite_urls(url: str, path: Path) -> None:
    """``sqlite:///`` paths are relative; a fourth slash makes them absolute."""
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path


def test_memory_url() -> None:
    """``memory://`` gives an in-memory store."""
    assert isinstance(open_store("memory://"), MemoryStore)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://tpas@db.example:5432/tpas",
        "postgres://tpas@db.example/tpas",
        "postgresql://tpas:s3cret@db.example/tpas?sslmode=require",
    ],
    ids=["postgresql", "postgres", "password-and-options"],
)
def test_postgres_urls(url: str) -> None:
    """``postgresql://`` and ``postgres://`` give a PostgreSQL store, without connecting."""
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert "s3cret" not in repr(store)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tpas.db", "not a storage URL"),
        ("mysql://db/tpas", "unsupported storage scheme 'mysql'"),
        ("sqlite://tpas.db", "names a host"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///data/", "names no database file"),
        ("sqlite:///tpas.db?mode=ro", "no query"),
        ("memory://x", "takes nothing"),
        ("postgresql://db.example/tpas?no_such_option=1", "cannot parse PostgreSQL URL"),
    ],
    ids=[
        "no-scheme",
        "unknown-scheme",
        "sqlite-host",
        "sqlite-no-path",
        "sqlite-directory",
        "sqlite-query",
        "memory-path",
        "postgres-bad-option",
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    """An unusable URL raises ConfigError for ``storage.url`` saying what is wrong."""
    with pytest.raises(ConfigError, match=message) as caught:
        open_store(url)
    assert caught.value.key == "storage.url"


def test_bad_postgres_url_never_shows_the_password() -> None:
    """A PostgreSQL URL that cannot be parsed is reported with its password masked."""
    with pytest.raises(ConfigError) as caught:
        open_store("postgresql://tpas:hunter2@db.example/tpas?no_such_option=1")
    assert "hunter2" not in str(caught.value)
    assert "tpas:***@db.example" in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://tpas:hunter2@db/tpas", "postgresql://tpas:***@db/tpas"),
        ("postgresql://tpas:p%40ss@db:5432/tpas", "postgresql://tpas:***@db:5432/tpas"),
        ("postgresql://tpas@db/tpas?password=hunter2", "postgresql://tpas@db/tpas?password=***"),
        ("postgresql://tpas@db/tpas", "postgresql://tpas@db/tpas"),
        ("host=db password=hunter2 dbname=tpas", "host=db password=*** dbname=tpas"),
        ("host=db password = 'a \\' b' dbname=tpas", "host=db password = *** dbname=tpas"),
    ],
    ids=["userinfo", "encoded", "query", "none", "key-value", "key-value-quoted"],
)
def test_mask_password(url: str, masked: str) -> None:
    """Passwords in user info, query parameters and key=value strings are masked."""
    assert mask_password(url) == masked


def test_public_names() -> None:
    """The package exports a sorted list of names that all exist."""
    assert sorted(tpas.storage.__all__) == tpas.storage.__all__
    for name in tpas.storage.__all__:
        assert getattr(tpas.storage, name) is not None
