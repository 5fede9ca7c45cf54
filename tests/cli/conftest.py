"""Fixtures for the command-line tests: run the real ``tpas`` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

RunTpas = Callable[..., "Run"]


@dataclass(frozen=True)
class Run:
    """The outcome of one ``tpas`` process."""

    code: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def out(self) -> str:
        """Standard output as text."""
        return self.stdout_bytes.decode()

    @property
    def err(self) -> str:
        """Standard error as text."""
        return self.stderr_bytes.decode()

    def reveals(self, key: str) -> bool:
        """Whether stdout or stderr shows the key, in any case, whole or any 8 characters
        of it."""
        text = (self.out + self.err).lower()
        secret = key.strip().lower()
        parts = {secret[i : i + 8] for i in range(len(secret) - 7)} | {secret}
        return any(part in text for part in parts)


@pytest.fixture
def tpas(tmp_path: Path) -> RunTpas:
    """Run ``python -m tpas ARGS...`` (optionally with stdin) from an empty directory."""

    def run(*args: str, stdin: bytes | None = None) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", "tpas", *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run
