"""Coverage-guided fuzzing of the decoders, the verifier and the downlink signer, bounded.

Each target of ``tests/reliability/fuzz_targets.py`` runs in its own process for a few
seconds from a corpus seeded with the published examples of ``tests/fixtures``, with a
fixed libFuzzer seed. A crash (an exception outside the tpas error tree, a broken round
trip or verdict disagreement) or a hang (one input over 5 s) fails the test and leaves the
input in the test's temporary directory; the docstring of ``fuzz_targets.py`` says how to
run a longer campaign by hand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

HARNESS: Final = Path(__file__).with_name("fuzz_targets.py")
SECONDS_PER_TARGET: Final = int(os.environ.get("TPAS_FUZZ_SECONDS", "7"))
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+ .*exec/s: (\d+)")


def run_target(target: str, directory: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    """Run one fuzz target for ``seconds`` with seed 1; its corpus lives in ``directory``."""
    return subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            target,
            str(directory / "corpus"),
            "-seed=1",
            f"-max_total_time={seconds}",
            "-timeout=5",
            "-rss_limit_mb=1024",
            f"-artifact_prefix={directory}/",
            "-print_final_stats=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # atheris and libFuzzer write to both
        text=True,
        timeout=seconds + 90,
        check=False,
        cwd=directory,
    )


@pytest.mark.parametrize("target", ["decode", "check_report", "downlink"])
def test_fuzzing_finds_no_crash(target: str, tmp_path: Path) -> None:
    """Seconds of coverage-guided fuzzing raise nothing outside the tpas error tree."""
    result = run_target(target, tmp_path, SECONDS_PER_TARGET)

    crashes = sorted(path.name for path in tmp_path.glob("*-*") if path.is_file())
    # On a crash, show the Python exception libFuzzer reports rather than its start-up log.
    report = result.stdout.partition("=== Uncaught Python exception")[2] or result.stdout
    assert result.returncode == 0, report[:3000]
    assert crashes == []
    done = _DONE.search(result.stdout)
    assert done is not None, result.stdout[-2000:]
    runs, cov, features, corpus, speed = map(int, done.groups())
    print(  # noqa: T201 - the figures for docs/reliability.md
        f"\nfuzz {target}: {runs} inputs in {SECONDS_PER_TARGET} s ({speed}/s), "
        f"coverage {cov} edges / {features} features, corpus {corpus}"
    )
    # The budget was spent fuzzing, not starting up: far more inputs than seeds ran.
    assert runs > 1000
