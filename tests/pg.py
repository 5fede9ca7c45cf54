"""PostgreSQL for the tests: the machine's shared server, and private throwaway servers.

The shared server comes from ``TPAS_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``); set it to an empty string to skip every
PostgreSQL test. Tests only ever create and drop their own schemas and databases on it;
a test that stops PostgreSQL starts a :class:`PrivateServer` (initdb in a temporary
directory, its own port) and never touches the shared one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tpas.storage import mask_password

__all__ = [
    "DEFAULT_POSTGRES_DSN",
    "PrivateServer",
    "private_server",
    "scratch_database",
    "shared_dsn",
    "with_database",
]

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def shared_dsn() -> str:
    """The shared server's URL; skips when switched off, fails when unreachable."""
    dsn = os.environ.get("TPAS_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    if not dsn:
        pytest.skip("PostgreSQL tests disabled: TPAS_TEST_POSTGRES_DSN is empty")
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {mask_password(dsn)} is unreachable ({exc}); point "
            "TPAS_TEST_POSTGRES_DSN at a server, or set it to '' to skip these tests"
        )
    return dsn


def with_database(dsn: str, name: str) -> str:
    """``dsn`` (a URL) pointing at database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def scratch_database(dsn: str) -> Iterator[str]:
    """A fresh, empty database on the server of ``dsn``; dropped afterwards."""
    name = f"tpas_test_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            # FORCE: a killed tpas may have left connections behind.
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PrivateServer:
    """A throwaway PostgreSQL cluster in a temporary directory, on its own port."""

    bindir: Path
    datadir: Path
    port: int

    @property
    def dsn(self) -> str:
        """A URL for its ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        """Whether the server is up (or frozen)."""
        return (self.datadir / "postmaster.pid").exists()

    def new_database(self) -> str:
        """Create an empty database (kept until the cluster is removed); returns its URL."""
        name = f"tpas_{secrets.token_hex(4)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_database(self.dsn, name)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("start", "-w", "-l", str(self.datadir / "server.log"), "-o", options)

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server; ``fast`` cuts open connections, ``immediate`` also skips the
        shutdown checkpoint (like a crash: the next start replays the WAL)."""
        self._pg_ctl("stop", "-w", "-m", mode)

    def freeze(self, frozen: bool = True) -> None:
        """Stop (SIGSTOP) or resume (SIGCONT) every process of the cluster: a hung server
        that keeps its connections open and answers nothing.

        The postmaster first, and only once it has stopped its children: a backend it was
        forking as the signal arrived would otherwise be missed and go on answering. The
        children are then listed again until no new one shows up.
        """
        try:
            postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return  # not running
        sent = signal.SIGSTOP if frozen else signal.SIGCONT
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, sent)
        if frozen:
            _wait_until_stopped(postmaster)
        signalled: set[int] = set()
        while pending := [pid for pid in _children(postmaster) if pid not in signalled]:
            for pid in pending:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sent)
                signalled.add(pid)

    def _pg_ctl(self, *args: str) -> None:
        _run_as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args)


def _wait_until_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until process ``pid`` is in the stopped state (or gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return
        if state in ("T", "t"):
            return
        time.sleep(0.001)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


def _children(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name in parentheses may contain spaces; the fields after it do not.
        if int(text.rpartition(")")[2].split()[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _run_as_postgres(*command: str) -> None:
    # initdb and postgres refuse to run as root.
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)


@contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A private, running PostgreSQL server, removed afterwards; skips where PostgreSQL's
    binaries are not installed or PostgreSQL tests are switched off."""
    if os.environ.get("TPAS_TEST_POSTGRES_DSN") == "":
        pytest.skip("PostgreSQL tests disabled: TPAS_TEST_POSTGRES_DSN is empty")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = shutil.which("initdb") or (found[-1] if found else None)
    if initdb is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("needs PostgreSQL's initdb (and runuser when running as root)")
    bindir = Path(initdb).parent
    # Not under pytest's tmp_path: the postgres user must be able to enter it.
    datadir = Path(tempfile.mkdtemp(prefix="tpas-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(datadir, "postgres", "postgres")
        _run_as_postgres(initdb, "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync")
        server = PrivateServer(bindir, datadir, _free_port())
        server.start()
        try:
            yield server
        finally:
            server.freeze(False)
            if server.running:
                server.stop("immediate")
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
