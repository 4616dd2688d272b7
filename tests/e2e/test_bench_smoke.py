"""The benchmark's load generator against real servers: it measures echostat and catches lies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faulty_servers import faulty_server, flips_byte

REPO = Path(__file__).resolve().parents[2]
LOADGEN = REPO / "bench" / "loadgen.py"
STARTUP_TIMEOUT_S = 30


def loadgen(port: int, *extra: str, mode: str = "pingpong") -> subprocess.CompletedProcess[str]:
    """One short run of bench/loadgen.py (pingpong unless `mode` says) against `port`."""
    argv = [sys.executable, str(LOADGEN), mode, "--port", str(port), "--connections", "4"]
    argv += ["--duration", "1", "--warmup", "0.1", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def echostat(tmp_path: Path) -> Iterator[int]:
    """A real `echostat` process with the default event loop; yields its echo port."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "listeners:\n  - {name: main, host: 127.0.0.1, port: 0}\n"
        "status: {host: 127.0.0.1, port: 0}\nshutdown_grace_s: 1\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "echostat", "--config", str(config)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _echo_port(process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=STARTUP_TIMEOUT_S)
        assert process.stderr is not None
        process.stderr.close()


def _echo_port(process: subprocess.Popen[str]) -> int:
    """The echo port from echostat's start-up line (it binds port 0)."""
    assert process.stderr is not None
    timer = threading.Timer(STARTUP_TIMEOUT_S, process.kill)
    timer.start()
    try:
        for line in process.stderr:
            found = re.search(r"echoing: main on [\d.]+:(\d+)", line)
            if found:
                return int(found.group(1))
    finally:
        timer.cancel()
    raise AssertionError(f"echostat exited without a start-up line (status {process.poll()})")


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
    argv = [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "none"]
    argv += ["--cells", "churn x32", "--duration", "0.5", "--no-pin", "--loadgen-procs", "2"]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    (results,) = tmp_path.glob("*-quick.json")
    (run,) = json.loads(results.read_text())["raw"]["echostat (uvloop)"]["churn-x32"]
    assert run["loadgen_procs"] == 2
    assert run["connections"] == 32
    assert run["connections_per_s"] > 0
    assert run["failures"] == {}
    assert "latencies_us" not in run
