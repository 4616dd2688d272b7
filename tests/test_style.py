"""The code keeps the house style: ruff's lint and format rules, and mypy --strict."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

CHECKED = ["server", "web", "probe", "echostat", "tests", "bench", "docs"]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    result = run("ruff", "format", "--check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing() -> None:
    """Type hints everywhere, checked strictly, on the service, the probe and the tests."""
    result = run("mypy", "server", "web", "probe", "echostat", "tests")
    assert result.returncode == 0, result.stdout + result.stderr
