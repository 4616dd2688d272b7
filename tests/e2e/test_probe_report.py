"""What `echostat probe` reports and how: the --json keys however a run ends, the seed, ping's
short flags, percentiles, a load run at a fixed rate, and a reader that goes away."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import (
    DEADLINE_S,
    LOCAL_PORTS,
    REPO,
    EchostatProcess,
    fetch_json,
    probe_here,
    wait_for,
)

UNKNOWN_HOST = "nonexistent.invalid"
"""A name that never resolves (RFC 6761)."""


@pytest.fixture(scope="module")
def echostat() -> Iterator[EchostatProcess]:
    """One echostat with a TCP and a UDP listener for the module's probes."""
    udp = ("listeners.2.name=udp", "listeners.2.protocol=udp", "listeners.2.port=0")
    process = EchostatProcess([*LOCAL_PORTS, *(arg for key in udp for arg in ("--set", key))])
    try:
        yield process.start()
    finally:
        process.stop()


def closed_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing listens on now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def keys(report: dict[str, Any]) -> list[str]:
    return list(report)


Capsys = pytest.CaptureFixture[str]


@pytest.mark.parametrize(
    "args",
    [("-c", "1"), ("--connections", "1", "--duration", "0.3")],
    ids=["round-trips", "load"],
)
def test_json_has_the_same_keys_on_success_refusal_and_unknown_host(
    capsys: Capsys, echostat: EchostatProcess, args: tuple[str, ...]
) -> None:
    """null where nothing is known, a top-level error, the start time and the version."""
    ok = probe_here(capsys, f"127.0.0.1:{echostat.echo_port}", *args, "--json")
    refused = probe_here(capsys, f"127.0.0.1:{closed_port()}", *args, "--json")
    unknown = probe_here(capsys, f"{UNKNOWN_HOST}:7", *args, "--json")
    passed, refusal, no_host = ok.report(), refused.report(), unknown.report()
    assert [ok.status, refused.status, unknown.status] == [0, 1, 1]
    assert keys(passed) == keys(refusal) == keys(no_host)
    assert keys(passed)[-4:] == ["error", "seed", "started_at", "version"]
    assert passed["error"] is None
    assert refusal["error"] == refused.err.removeprefix("echostat probe: ").rstrip("\n")
    assert "cannot resolve nonexistent.invalid" in no_host["error"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", passed["started_at"])
    assert passed["version"] and 0 <= passed["seed"] < 2**32
    assert len({passed["seed"], refusal["seed"], no_host["seed"]}) == 3, "a seed per run"
    assert no_host["connect_ms"] is None and no_host["tls"] is None


def test_udp_json_has_the_same_keys_on_success_unreachable_port_and_unknown_host(
    capsys: Capsys, echostat: EchostatProcess
) -> None:
    udp = f"udp://127.0.0.1:{echostat.ports['udp']}"
    ok = probe_here(capsys, udp, "-c", "2", "-i", "0.05", "--json")
    closed = f"udp://127.0.0.1:{closed_port(socket.SOCK_DGRAM)}"
    unreachable = probe_here(capsys, closed, "-c", "1", "--json")
    unknown = probe_here(capsys, f"udp://{UNKNOWN_HOST}:7", "-c", "1", "--json")
    assert (ok.status, unreachable.status, unknown.status) == (0, 1, 1)
    assert keys(ok.report()) == keys(unreachable.report()) == keys(unknown.report())
    no_host = unknown.report()
    assert no_host["sent"] is None
    assert no_host["error"] == unknown.err.removeprefix("echostat probe: ").rstrip("\n")


def test_seed_given_by_flag_is_the_runs(capsys: Capsys, echostat: EchostatProcess) -> None:
    done = probe_here(
        capsys, f"127.0.0.1:{echostat.echo_port}", "-c", "1", "--seed", "12345", "--json"
    )
    report = done.report()
    assert (done.status, report["seed"], report["options"]["seed"]) == (0, 12345, 12345)


def test_short_flags_and_quiet_print_the_summary_with_loss_and_time(
    capsys: Capsys, echostat: EchostatProcess
) -> None:
    """-c -i -s -W -q as ping's: no line per round trip, loss and total time in the summary."""
    target = f"127.0.0.1:{echostat.echo_port}"
    done = probe_here(capsys, target, "-c", "3", "-i", "0.05", "-s", "100", "-W", "2", "-q")
    assert done.status == 0, done.err
    lines = done.out.splitlines()
    assert lines[0] == f"PROBE {target}: 3 round trips of 100 bytes, every 0.05 s"
    assert lines[1].startswith(f"connected to {target} in ")
    assert lines[2] == f"--- {target} probe statistics ---"
    assert re.fullmatch(
        r"3 sent, 3 verified, 0 failed, connect [\d.]+ ms, 0% loss, time \d+ ms", lines[3]
    )
    assert len(lines) == 6


def test_percentiles_are_the_ones_asked_for(capsys: Capsys, echostat: EchostatProcess) -> None:
    target = f"127.0.0.1:{echostat.echo_port}"
    asked = ("-c", "4", "-i", "0", "--percentiles", "50,90,99,99.9")
    shown = probe_here(capsys, target, *asked)
    assert re.search(r"^rtt p50/p90/p99/p99\.9 = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$", shown.out, re.M)
    report = probe_here(capsys, target, *asked, "--json").report()
    assert [p["percentile"] for p in report["rtt_percentiles"]] == [50, 90, 99, 99.9]
    assert report["rtt_percentiles"][-1]["ms"] == report["rtt_ms"]["max_ms"]


def test_load_at_a_fixed_rate_reports_asked_and_achieved_with_intervals(
    capsys: Capsys, echostat: EchostatProcess
) -> None:
    """--rate 100/s over 2 connections for 1.5 s: about 150 round trips, a sample a second."""
    target = f"127.0.0.1:{echostat.echo_port}"
    load = ("--connections", "2", "--duration", "1.5", "--rate", "100/s")
    done = probe_here(capsys, target, *load, "--json")
    report = done.report()
    assert done.status == 0, done.err
    assert report["rate_asked_per_s"] == 100
    # Held at the rate (back to back it would be thousands a second); a busy machine lags.
    assert 25 <= report["round_trips_per_s"] <= 105
    intervals = report["intervals"]
    assert 2 <= len(intervals) <= 3
    assert sum(sample["round_trips"] for sample in intervals) == report["verified"]
    assert intervals[0]["elapsed_s"] < intervals[-1]["elapsed_s"] <= report["seconds"]
    assert [p["percentile"] for p in intervals[0]["rtt_percentiles"]] == [50, 90, 99]
    shown = probe_here(capsys, target, "--connections", "1", "--duration", "0.3", "--rate", "50")
    assert shown.out.startswith(
        f"PROBE {target}: pingpong, 1 connection, 64-byte round trips at 50/s, 0.3 s\n"
    )
    assert re.search(r"^round trips/s +\d+ \(asked 50\)$", shown.out, re.M), shown.out


def test_half_close_reports_transfer_time_and_rate(
    capsys: Capsys, echostat: EchostatProcess
) -> None:
    target = f"127.0.0.1:{echostat.echo_port}"
    done = probe_here(capsys, target, "--half-close", "--size", "100000", "--json")
    report = done.report()
    assert done.status == 0, done.err
    assert report["transfer_ms"] > 0
    assert report["mb_per_s"] == pytest.approx(100000 / report["transfer_ms"] / 1e3, rel=0.01)
    shown = probe_here(capsys, target, "--half-close", "--size", "1000")
    assert re.search(r"^1000 bytes sent and back in [\d.]+ ms, [\d.]+ MB/s$", shown.out, re.M)


def echoed_on_each(status_port: int, connections: int) -> bool:
    """Whether `connections` are open and each has had an echo back: a round trip's bytes
    came in after the first (a probe's connection with nothing back fails at Ctrl-C)."""
    rows = fetch_json(status_port, "/api/connections")["connections"]
    return len(rows) >= connections and all(row["bytes_received"] >= 128 for row in rows)


def test_interrupted_load_run_says_so(echostat: EchostatProcess) -> None:
    """Ctrl-C during a load run: the table's title says it was interrupted, and after how long."""
    command = [sys.executable, "-m", "echostat", "probe", f"127.0.0.1:{echostat.echo_port}"]
    probe = subprocess.Popen(
        [*command, "--connections", "2", "--duration", "60"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None
    assert probe.stdout.readline().startswith("PROBE ")
    wait_for(lambda: echoed_on_each(echostat.status_port, 2), "an echo back on both connections")
    probe.send_signal(signal.SIGINT)
    out, errors = probe.communicate(timeout=DEADLINE_S)
    assert probe.returncode == 0, errors
    assert re.search(r"load statistics, interrupted after [\d.]+ s ---", out), out


def probe_in_bash(echostat: EchostatProcess, rest: str) -> subprocess.CompletedProcess[str]:
    """``echostat probe`` of the echo listener in bash, `rest` after the target (its flags,
    then redirections or a pipeline), to completion."""
    command = [sys.executable, "-m", "echostat", "probe", f"127.0.0.1:{echostat.echo_port}"]
    return subprocess.run(
        ["bash", "-c", f"{' '.join(command)} {rest}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def test_a_reader_that_goes_away_ends_the_probe_quietly(echostat: EchostatProcess) -> None:
    """`echostat probe ... | head -1`: the pipe closes after the first line; exit 1, no
    traceback, and the run stops instead of going on until Ctrl-C."""
    pipeline = probe_in_bash(echostat, "-c 0 -i 0.05 | head -1; exit ${PIPESTATUS[0]}")
    assert pipeline.returncode == 1
    assert pipeline.stdout == (
        f"PROBE 127.0.0.1:{echostat.echo_port}: "
        "round trips of 64 bytes until Ctrl-C, every 0.05 s\n"
    )
    assert pipeline.stderr == ""


@pytest.mark.parametrize("output", ["--json", "-q"])
@pytest.mark.parametrize(
    ("redirect", "why"),
    [(">/dev/full", "no space left on device"), (">&-", "bad file descriptor")],
    ids=["full", "closed"],
)
def test_a_stdout_that_cannot_be_written_is_named_without_a_traceback(
    echostat: EchostatProcess, output: str, redirect: str, why: str
) -> None:
    """Output to a full disk (/dev/full) or to a closed stdout: exit 1 and one line saying
    so, as for a reader that went away, not a traceback."""
    done = probe_in_bash(echostat, f"-c 1 {output} {redirect}")
    assert (done.returncode, done.stderr) == (
        1,
        f"echostat probe: cannot write to stdout: {why}\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["http://host:7007"],
            "'http://host:7007': http:// is not an echo target; "
            "expected HOST:PORT for TCP or udp://HOST:PORT",
        ),
        (["127.0.0.1:7", "-x"], "echostat probe: error: unrecognized arguments: -x"),
        (["127.0.0.1:7", "--half-close", "--rate", "5"], "--rate starts a load run"),
        (["127.0.0.1:7", "--mode", "stream", "--rate", "5"], "--rate does not apply to --mode"),
        (["127.0.0.1:7", "--seed", "-1"], "--seed: expected 0..4294967295, got -1"),
        (["127.0.0.1:7", "--percentiles", "0,50"], "--percentiles: expected up to 10 numbers"),
    ],
)
def test_usage_errors_name_the_probes_flag(capsys: Capsys, args: list[str], message: str) -> None:
    """A target with a scheme, or a flag the probe does not know, is the probe's usage error
    (with the probe's usage, not the server's)."""
    done = probe_here(capsys, *args)
    assert done.status == 2
    assert message in done.err
    assert "usage: echostat probe" in done.err or done.err.startswith("echostat probe: ")
