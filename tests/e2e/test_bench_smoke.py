"""The benchmark's load generator against real servers: it measures echostat and catches lies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import StartEchostat
from tests.faulty_servers import faulty_server, flips_byte
from tests.helpers import LOCAL_PORTS, REPO

LOADGEN = REPO / "bench" / "loadgen.py"


def loadgen(port: int, *extra: str, mode: str = "pingpong") -> subprocess.CompletedProcess[str]:
    """One short run of bench/loadgen.py (pingpong unless `mode` says) against `port`."""
    argv = [sys.executable, str(LOADGEN), mode, "--port", str(port), "--connections", "4"]
    argv += ["--duration", "1", "--warmup", "0.1", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def quick_churn_run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """bench/run.py's quick plan, echostat alone, its churn x32 cell only, results in `out`."""
    argv = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "none"]
    argv += ["--cells", "churn x32", "--duration", "0.5", "--no-pin", *extra]
    return subprocess.run(
        [*argv, "--out", str(out)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def echostat(start_echostat: StartEchostat) -> int:
    """A real `echostat` process with the repository's config on free ports; its echo port."""
    return start_echostat(*LOCAL_PORTS, "--set", "shutdown_grace_s=1").echo_port


@pytest.fixture
def corrupting_server() -> Iterator[int]:
    """A threaded echo server on 127.0.0.1 that corrupts byte 1000; yields its port."""
    with faulty_server(flips_byte(1000)) as port:
        yield port


def test_loadgen_measures_echostat_and_verifies_every_echo(echostat: int) -> None:
    """Pingpong against echostat completes with every echoed byte verified."""
    done = loadgen(echostat)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["round_trips_per_s"] > 0
    assert result["served_min"] > 0


def test_loadgen_fails_the_run_on_a_corrupted_echo(corrupting_server: int) -> None:
    """A server that alters one byte makes the load generator exit non-zero, naming it."""
    done = loadgen(corrupting_server)
    assert done.returncode == 1
    flipped = r"connection \d: byte 1000 differs from what was sent: expected (0x..), received "
    found = re.search(flipped + r"(0x..)", done.stderr)
    assert found, done.stderr
    assert int(found[1], 16) ^ int(found[2], 16) == 1


@pytest.mark.parametrize("mode", ["churn", "churn-half-close"])
def test_churn_modes_measure_echostat_and_verify_every_echo(echostat: int, mode: str) -> None:
    """Connect, echo 16 bytes, close, again: connections complete verified, none fails."""
    done = loadgen(echostat, "--size", "16", mode=mode)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["connections_per_s"] > 0
    assert result["failures"] == {}
    assert 0 < result["p50_us"] <= result["p99_us"]


def test_churn_fails_the_run_on_a_corrupted_echo() -> None:
    """A server that alters byte 5 of each connection fails the churn run, naming the byte."""
    with faulty_server(flips_byte(5)) as port:
        done = loadgen(port, "--size", "16", mode="churn")
    assert done.returncode == 1
    assert re.search(r"connection \d+: byte 5 differs from what was sent", done.stderr), done.stderr


def test_runner_merges_the_results_of_several_load_generators(tmp_path: Path) -> None:
    """--loadgen-procs 2 splits a churn cell over two verifying processes and merges them."""
    done = quick_churn_run(tmp_path, "--loadgen-procs", "2")
    assert done.returncode == 0, done.stderr
    (results,) = tmp_path.glob("*-quick.json")
    (run,) = json.loads(results.read_text())["raw"]["echostat (uvloop)"]["churn-x32"]
    assert run["loadgen_procs"] == 2
    assert run["connections"] == 32
    assert run["connections_per_s"] > 0
    assert run["failures"] == {}
    assert "latencies_us" not in run


def test_runner_records_other_work_on_the_machine_in_every_cell(tmp_path: Path) -> None:
    """Each cell run carries the load average and the cores that processes outside the
    benchmark kept busy meanwhile, and the report shows them per cell."""
    done = quick_churn_run(tmp_path, "--busy-retries", "0")
    assert done.returncode == 0, done.stderr
    (results,) = tmp_path.glob("*-quick.json")
    document = json.loads(results.read_text())
    (run,) = document["raw"]["echostat (uvloop)"]["churn-x32"]
    assert run["load_average"] >= 0 and run["other_cores"] >= 0
    summary = document["summary"]["echostat (uvloop)"]["churn-x32"]
    assert summary["other_cores"] == run["other_cores"]
    assert summary["busy_reps"] == (run["other_cores"] > 0.25)
    (report,) = tmp_path.glob("*-quick.md")
    assert "## Other work on the machine" in report.read_text()
