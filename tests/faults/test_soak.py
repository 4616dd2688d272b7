"""The churn soak, run briefly: after it, the server is back at its baseline."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO


def test_short_churn_soak_returns_to_baseline() -> None:
    """8 s of connect/echo/reset/half-close churn leaves fds, RSS and counters at baseline."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.faults.soak", "--seconds", "8", "--clients", "32"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "result: ok"
