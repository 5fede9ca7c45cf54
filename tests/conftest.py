"""Fixtures shared by the whole suite: the example bodies and the token vectors.

Tests read only ``tests/fixtures`` (copied from the ThingPark study, see SOURCES.md there),
never ``../shared``, so the suite runs from a source checkout alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES_DIR = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The directory holding example bodies, captured queries and token vectors."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def vectors(fixtures_dir: Path) -> dict[str, dict[str, Any]]:
    """The token known-answer vectors (SPEC.md §3.4), by id (``UL-1``, ``DL-1``, ...)."""
    table = json.loads((fixtures_dir / "token_test_vectors.json").read_text(encoding="utf-8"))
    return {vector["id"]: vector for vector in table["vectors"]}
