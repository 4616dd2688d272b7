"""The code keeps the house style: ruff's lint and format rules, and mypy --strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.source_tree import import_root
from tests.helpers import REPO

CHECKED = ["server", "web", "probe", "echostat", "tests", "bench", "docs"]


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    result = run("ruff", "format", "--check", *CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    """Type hints everywhere, checked strictly, on the service, the probe and the tests.

    mypy reads the package as installed (``echostat/server/...``), from a tree of links.
    """
    root = import_root(REPO, tmp_path)
    (root / "tests").symlink_to(REPO / "tests", target_is_directory=True)
    (root / "bench").symlink_to(REPO / "bench", target_is_directory=True)
    config = str(REPO / "pyproject.toml")
    result = run("mypy", "--config-file", config, "-p", "echostat", "-p", "tests", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_finds_nothing_in_the_benchmark(tmp_path: Path) -> None:
    """The benchmark's scripts (run from bench/, importing each other by file name) are
    checked strictly too, against the package as installed."""
    root = import_root(REPO, tmp_path)
    scripts = sorted(str(p.relative_to(REPO / "bench")) for p in (REPO / "bench").rglob("*.py"))
    config = str(REPO / "pyproject.toml")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", config, *scripts],
        cwd=REPO / "bench",
        env={**os.environ, "MYPYPATH": str(root)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
