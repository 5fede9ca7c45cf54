"""The ``tpas`` entry point: help, version, usage errors, and keys kept out of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

import tpas as tpas_package

if TYPE_CHECKING:
    from tests.cli.conftest import RunTpas

KEY: Final = "46ab678cd45df4a4e4b375Eacd096acc"
BODY: Final = str(Path(__file__).parents[1] / "fixtures" / "uplink_frame.json")


@pytest.mark.parametrize(
    ("args", "listed"),
    [
        pytest.param([], ["token", "decode"], id="tpas"),
        pytest.param(["token"], ["check", "sign-downlink"], id="token"),
        pytest.param(["token", "check"], ["--query", "--key", "--max-drift"], id="token-check"),
        pytest.param(["decode"], ["--to", "--from"], id="decode"),
    ],
)
def test_help_lists_the_commands(args: list[str], listed: list[str], tpas: RunTpas) -> None:
    """--help exits 0 and lists what can follow."""
    run = tpas(*args, "--help")
    assert (run.code, run.err) == (0, "")
    for word in listed:
        assert word in run.out


def test_version(tpas: RunTpas) -> None:
    """--version prints the package version."""
    run = tpas("--version")
    assert (run.code, run.out) == (0, f"tpas {tpas_package.__version__}\n")


def test_installed_console_script_runs() -> None:
    """The ``tpas`` console script installed beside this Python runs the same CLI."""
    script = Path(sys.executable).parent / "tpas"
    if not script.exists():
        pytest.skip("no tpas script beside this interpreter (package not installed)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, f"tpas {tpas_package.__version__}\n".encode())


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
        pytest.param(["token"], id="no-action"),
        pytest.param(["token", "check", BODY, "--key", KEY], id="no-query"),
        pytest.param(["decode", BODY, "--to", "yaml"], id="bad-choice"),
    ],
)
def test_usage_error_exits_2(args: list[str], tpas: RunTpas) -> None:
    """A command line argparse refuses exits 2 with usage and an error line, no traceback."""
    run = tpas(*args)
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith("usage: tpas")
    assert "error: " in run.err
    assert "Traceback" not in run.err
    assert not run.reveals(KEY)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["decode", BODY, "--key", KEY], id="key-where-none-is-taken"),
        pytest.param(["decode", BODY, f"--key={KEY}"], id="key-with-equals"),
        pytest.param(["token", "check", BODY, "--query", "q", "--kye", KEY], id="misspelt"),
        pytest.param(["token", "check", BODY, "--key", KEY, "--ke", KEY], id="abbreviated"),
        pytest.param(["decode", BODY, "--key", "abc123", "--bogus"], id="short-bad-key"),
        pytest.param(["token", "check", BODY, "--query", "q", KEY, "--key", KEY], id="stray"),
    ],
)
def test_usage_errors_never_echo_a_key(args: list[str], tpas: RunTpas) -> None:
    """argparse's messages, which repeat command-line values, never show a key."""
    run = tpas(*args)
    assert run.code == 2
    assert not run.reveals(KEY)
    assert "abc123" not in run.err
