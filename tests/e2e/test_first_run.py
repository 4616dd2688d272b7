"""A newcomer's first run: `echostat` with no config file, and the Makefile's two commands."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DEADLINE_S, REPO, EchostatProcess, recv_exactly, run_cli

DEFAULTS_ON_FREE_PORTS = ("--set", "listeners.0.port=0", "--set", "status.port=0")
"""The built-in defaults' one listener and the status side moved to free ports."""


@pytest.fixture
def empty_dir_echostat(tmp_path: Path) -> Iterator[EchostatProcess]:
    """echostat started with no --config in an empty directory, on free ports."""
    process = EchostatProcess(DEFAULTS_ON_FREE_PORTS, cwd=tmp_path)
    try:
        yield process.start()
    finally:
        process.stop()


def test_echostat_in_an_empty_directory_runs_on_the_built_in_defaults(
    empty_dir_echostat: EchostatProcess,
) -> None:
    """With no --config and no ./config.yaml, echostat starts on the defaults, says so in its
    startup line, and echoes."""
    (startup,) = [line for line in empty_dir_echostat.log if "echoing:" in line]
    assert startup.endswith("; no config file: running on the built-in defaults"), startup
    with socket.create_connection(("127.0.0.1", empty_dir_echostat.echo_port), DEADLINE_S) as c:
        c.sendall(b"hello from nowhere")
        assert recv_exactly(c, 18) == b"hello from nowhere"


def test_check_config_in_an_empty_directory_names_the_built_in_defaults(tmp_path: Path) -> None:
    """--check-config with no file to read validates the defaults and says that it did."""
    result = run_cli("--check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("echostat: built-in defaults: configuration is valid;")


def test_a_named_config_file_that_is_missing_still_exits_2(tmp_path: Path) -> None:
    """Only an unnamed config.yaml may be absent: --config naming a missing file exits 2."""
    result = run_cli("--config", "elsewhere.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "echostat: elsewhere.yaml: file not found (pass --config PATH)\n"


def _make_dry_run(target: str, tmp_path: Path) -> str:
    """The commands `make -n TARGET` would run in a fresh clone (no .venv yet)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    # Run by `make test`, this make is a sub-make that would print "Entering directory" lines.
    done = subprocess.run(
        [make, "--no-print-directory", "-n", target],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_make_run_installs_only_what_the_server_needs(tmp_path: Path) -> None:
    """`make run` on a fresh clone installs echostat without the test extra, then serves."""
    commands = _make_dry_run("run", tmp_path)
    assert "--editable ." in commands
    assert "[test]" not in commands
    assert commands.splitlines()[-1] == ".venv/bin/echostat"


def test_make_test_installs_the_test_extra(tmp_path: Path) -> None:
    """`make test` on a fresh clone installs the test extra, then runs pytest."""
    commands = _make_dry_run("test", tmp_path)
    assert "--editable '.[test]'" in commands
    assert commands.splitlines()[-1] == ".venv/bin/python -m pytest"
