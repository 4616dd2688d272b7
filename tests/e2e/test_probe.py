"""``echostat probe`` against echostat and against socat's echo: verified, counted, scriptable."""

from __future__ import annotations

import os
import pty
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from echostat.cli import main
from tests.helpers import (
    DEADLINE_S,
    LOCAL_PORTS,
    REPO,
    EchostatProcess,
    RunningProbe,
    fetch_json,
    probe_json,
    require_program,
    run_probe,
    wait_for,
)


@pytest.fixture(scope="module")
def echostat() -> Iterator[EchostatProcess]:
    """One echostat from the repository's config.yaml on free ports, for the whole module:
    the tests that count compare its /api/stats before and after their probe."""
    process = EchostatProcess([*LOCAL_PORTS, "--set", "limits.max_connections_per_ip=0"])
    try:
        yield process.start()
    finally:
        process.stop()


def run_command(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The ``echostat`` command in this process: its exit status, stdout and stderr."""
    try:
        status = main(list(args))
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def counts(echostat: EchostatProcess) -> tuple[int, int, int]:
    """Connections accepted, bytes received and bytes sent, from /api/stats."""
    stats = fetch_json(echostat.status_port)
    return (stats["connections"]["accepted"], stats["bytes"]["received"], stats["bytes"]["sent"])


def counted_since(echostat: EchostatProcess, before: tuple[int, int, int]) -> tuple[int, ...]:
    """What /api/stats counted since `before` (connections, bytes in, bytes out), once every
    connection is closed again."""

    def settled() -> tuple[int, ...] | None:
        stats = fetch_json(echostat.status_port)
        if stats["connections"]["active"]:
            return None
        return tuple(now - then for now, then in zip(counts(echostat), before, strict=True))

    return wait_for(settled, "the probe's connections to close")


def free_port() -> int:
    """A port nothing listens on now (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def socat_echo() -> Iterator[int]:
    """Debian's socat as an echo server (``EXEC:cat`` per connection); yields its port."""
    socat = require_program("socat", "socat")
    port = free_port()
    process = subprocess.Popen(
        [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", "EXEC:cat"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def listening() -> bool:
        assert process.poll() is None, process.stderr and process.stderr.read()
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, f"socat to listen on port {port}")
        yield port
    finally:
        process.kill()
        process.wait(timeout=DEADLINE_S)
        assert process.stderr is not None
        process.stderr.close()


def test_round_trips_are_verified_and_match_echostats_counts(echostat: EchostatProcess) -> None:
    """The ping-like run's bytes and its one connection are what echostat's /api/stats counts."""
    before = counts(echostat)
    done, report = probe_json(
        f"127.0.0.1:{echostat.echo_port}", "--count", "3", "--interval", "0.1"
    )
    assert done.returncode == 0, done.stderr
    assert (report["ok"], report["check"], report["failures"]) == (True, "round_trips", 0)
    assert (report["sent"], report["verified"], report["failed"]) == (3, 3, 0)
    assert report["bytes_sent"] == report["bytes_verified"] == 3 * 64
    assert report["rtt_ms"]["count"] == 3
    assert (
        0 < report["rtt_ms"]["min_ms"] <= report["rtt_ms"]["p50_ms"] <= report["rtt_ms"]["max_ms"]
    )
    assert report["connect_ms"] > 0
    assert counted_since(echostat, before) == (1, 3 * 64, 3 * 64)


def test_ping_like_output_has_a_line_per_round_trip_and_a_summary(
    echostat: EchostatProcess,
) -> None:
    done = run_probe(f"127.0.0.1:{echostat.echo_port}", "--count", "2", "--interval", "0.1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    target = f"127.0.0.1:{echostat.echo_port}"
    assert lines[0] == f"PROBE {target}: 2 round trips of 64 bytes, every 0.1 s"
    assert lines[1].startswith(f"connected to {target} in ")
    assert lines[2].startswith(f"64 bytes from {target}: seq=1 time=")
    assert lines[3].startswith(f"64 bytes from {target}: seq=2 time=")
    assert lines[4] == f"--- {target} probe statistics ---"
    assert lines[5].startswith("2 sent, 2 verified, 0 failed, connect ")
    assert lines[6].startswith("rtt min/avg/max/mdev = ")
    assert lines[7].startswith("rtt p50/p90/p99 = ")


def test_load_run_of_50_connections_is_verified_and_counted(echostat: EchostatProcess) -> None:
    """--connections 50 --duration 2: every round trip verified, echostat saw all 50."""
    target = f"127.0.0.1:{echostat.echo_port}"
    before = counts(echostat)
    done, report = probe_json(target, "--connections", "50", "--duration", "2")
    assert done.returncode == 0, done.stderr
    assert report["check"] == "load"
    assert report["connections"] == {"opened": 50, "failed": 0}
    assert report["connect_ms"]["count"] == 50
    assert report["verified"] == report["sent"] >= 50
    assert report["rtt_ms"]["count"] == report["verified"]
    assert report["bytes_verified"] == report["bytes_sent"] == 64 * report["sent"]
    assert report["round_trips_per_s"] > 0
    assert counted_since(echostat, before) == (50, report["bytes_sent"], report["bytes_sent"])


def test_stream_load_reports_verified_megabytes(echostat: EchostatProcess) -> None:
    target = f"127.0.0.1:{echostat.echo_port}"
    done, report = probe_json(target, "--mode", "stream", "--connections", "2", "--duration", "1")
    assert done.returncode == 0, done.stderr
    assert report["bytes_verified"] == report["bytes_sent"] > 0
    assert report["mb_per_s"] > 0


def test_load_table_lists_the_figures(echostat: EchostatProcess) -> None:
    done = run_probe(f"127.0.0.1:{echostat.echo_port}", "--connections", "3", "--duration", "1")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout
    rows = [line.split()[0] for line in done.stdout.splitlines()[2:]]
    assert rows == ["connections", "connect", "round", "round", "rtt", "rtt", "bytes", "MB/s"]


def test_half_close_gets_every_byte_back_then_eof(echostat: EchostatProcess) -> None:
    target = f"127.0.0.1:{echostat.echo_port}"
    done, report = probe_json(target, "--half-close", "--size", "100000")
    assert done.returncode == 0, done.stderr
    assert (report["check"], report["bytes_verified"]) == ("half_close", 100000)
    assert report["eof_ms"] >= report["echo_ms"] > 0


def test_connect_only_times_each_handshake(echostat: EchostatProcess) -> None:
    target = f"127.0.0.1:{echostat.echo_port}"
    before = counts(echostat)
    done, report = probe_json(target, "--connect-only", "--count", "2", "--interval", "0.1")
    assert done.returncode == 0, done.stderr
    assert (report["sent"], report["verified"], report["connect_ms"]["count"]) == (2, 2, 2)
    assert counted_since(echostat, before) == (2, 0, 0)


def test_ctrl_c_prints_the_summary_and_exits_0(echostat: EchostatProcess) -> None:
    """--count 0 runs until SIGINT, then reports what it did, with no traceback."""
    target = f"127.0.0.1:{echostat.echo_port}"
    probe = RunningProbe(target)
    seen = [probe.read_line() for _ in range(4)]  # banner, connected, seq=1, seq=2
    assert "seq=2 " in seen[-1], seen
    status, out, errors = probe.interrupt()
    assert status == 0, errors
    assert f"--- {target} probe statistics ---" in out
    assert "Traceback" not in errors


def test_source_binds_the_client_address(echostat: EchostatProcess) -> None:
    """--source 127.0.0.2: echostat sees the connection come from that address."""
    probe = RunningProbe(f"127.0.0.1:{echostat.echo_port}", "--source", "127.0.0.2")
    try:

        def from_source() -> list[dict[str, Any]]:
            # Two round trips in: the first echo is back (an interrupt before any would fail).
            rows = fetch_json(echostat.status_port, "/api/connections")["connections"]
            return [
                row
                for row in rows
                if row["peer"].startswith("127.0.0.2:") and row["bytes_received"] >= 128
            ]

        assert wait_for(from_source, "a connection from 127.0.0.2 with an echo back")
    finally:
        status, _, errors = probe.interrupt()
    assert status == 0, errors


def test_progress_line_only_on_a_terminal(echostat: EchostatProcess) -> None:
    """On a terminal the load run rewrites a progress line once a second; in a pipe it does not
    (the other tests read pipes: their output has no carriage return)."""
    target = f"127.0.0.1:{echostat.echo_port}"
    terminal, child = pty.openpty()
    command = [sys.executable, "-m", "echostat", "probe", target, "--connections", "2"]
    try:
        done = subprocess.run(
            [*command, "--duration", "3.5"],
            cwd=REPO,
            stdout=child,
            stderr=subprocess.PIPE,
            timeout=DEADLINE_S,
            check=False,
        )
        os.close(child)
        child = -1
        shown = _read_all(terminal)
    finally:
        os.close(terminal)
        if child >= 0:
            os.close(child)
    assert done.returncode == 0, done.stderr
    progress = re.findall(r"\r\x1b\[K +[\d.]+ s  \d+ round trips/s  p99 [\d.]+ ms  0 failed", shown)
    assert len(progress) >= 2, shown
    assert "--- " + target + " load statistics ---" in shown


def _read_all(terminal: int) -> str:
    """Everything written to a pseudo-terminal whose other end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 65536)
        except OSError:  # EIO: Linux's end of file on a pty whose other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_refused_connection_exits_1_naming_the_target() -> None:
    target = f"127.0.0.1:{free_port()}"
    done = run_probe(target, "--count", "1")
    assert done.returncode == 1
    assert done.stderr == f"echostat probe: cannot connect to {target}: connection refused\n"


def test_socat_echo_passes_every_check(socat_echo: int) -> None:
    """An echo server that is not ours: round trips, half-close and a load run all verify."""
    target = f"127.0.0.1:{socat_echo}"
    for args in (
        ("--count", "3", "--interval", "0.1"),
        ("--half-close", "--size", "70000"),
        ("--connections", "4", "--duration", "1"),
    ):
        done, report = probe_json(target, *args)
        assert done.returncode == 0, (args, done.stderr)
        assert report["ok"] and report["bytes_verified"] == report["bytes_sent"] > 0, report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1"], "'127.0.0.1': expected HOST:PORT, e.g. 127.0.0.1:7007"),
        (["::1:7007"], "'::1:7007': an IPv6 address goes in brackets, e.g. [::1]:7007"),
        (["127.0.0.1:0"], "'127.0.0.1:0': port must be 1..65535, got '0'"),
        (["udp://127.0.0.1:7", "--timeout", "inf"], "--timeout: expected 0.01..3600, got inf"),
        (["udp://127.0.0.1:7", "--timeout", "0.001"], "--timeout: expected 0.01..3600, got 0.001"),
        (["udp://127.0.0.1:7", "--interval", "4000"], "--interval: expected 0..3600, got 4000"),
        (["udp://127.0.0.1:7", "--source", "junk"], "--source 'junk': expected an IP address"),
        (
            ["127.0.0.1:7", "--source", "::1"],
            "--source ::1 is IPv6 but the target 127.0.0.1 is IPv4;"
            " use a source of the target's family",
        ),
        (
            ["udp://[::1]:7", "--source", "127.0.0.1"],
            "--source 127.0.0.1 is IPv4 but the target ::1 is IPv6;"
            " use a source of the target's family",
        ),
        (
            ["udp://127.0.0.1"],
            "'udp://127.0.0.1': expected udp://HOST:PORT, e.g. udp://127.0.0.1:7007",
        ),
        (["udp://[::1]:0"], "'udp://[::1]:0': port must be 1..65535, got '0'"),
        (["udp://::1:7"], "'udp://::1:7': an IPv6 address goes in brackets, e.g. udp://[::1]:7007"),
        (["127.0.0.1:\u00b2"], "'127.0.0.1:\u00b2': port must be 1..65535, got '\u00b2'"),
        (
            ["127.0.0.1:7", "--dscp", "\u00b2"],
            "--dscp: expected 0..63 or a name (EF, AF11..AF43, CS0..CS7), got '\u00b2'",
        ),
        (
            ["127.0.0.1:7", "--proxy-header", "v1", "--proxy-source", "10.0.0.1:\u00b2"],
            "'10.0.0.1:\u00b2': port must be 0..65535, got '\u00b2'",
        ),
        (
            ["echo..example:7"],
            "'echo..example:7': 'echo..example' is not a host name:"
            " each label between its dots has 1 to 63 characters",
        ),
        (
            ["udp://" + "a" * 64 + ".example:7"],
            f"'udp://{'a' * 64}.example:7': '{'a' * 64}.example' is not a host name:"
            " each label between its dots has 1 to 63 characters",
        ),
        (["127.0.0.1:7", "--count", "-1"], "--count: expected 0..1000000, got -1"),
        (["127.0.0.1:7", "--size", "0"], "--size: expected 1..1048576, got 0"),
        (
            ["127.0.0.1:7", "--half-close", "--duration", "1"],
            "--duration starts a load run; it does not go with --half-close",
        ),
        (["127.0.0.1:7", "--duration", "1", "--count", "3"], "--count does not apply to load"),
        (["127.0.0.1:7", "--duration", "601"], "--duration: expected 0.1..600, got 601"),
        (
            ["127.0.0.1:7", "--count", "0", "--interval", "0"],
            "--count 0 runs until Ctrl-C: --interval must then be at least 0.01 s"
            " (every round-trip time is kept)",
        ),
        (["127.0.0.1:7", "--ca", "x.pem"], "--ca, --insecure and --sni need --tls"),
        (
            ["127.0.0.1:7", "--tls", "--ca", "/nonexistent.pem"],
            "--ca /nonexistent.pem: no such file",
        ),
        (["127.0.0.1:7", "--proxy-header", "v2"], "--proxy-header and --proxy-source go together"),
        (
            ["127.0.0.1:7", "--proxy-header", "v1", "--proxy-source", "::1:5"],
            "the PROXY source ::1 is IPv6 but the target is IPv4;"
            " use a source of the target's family",
        ),
        (
            ["127.0.0.1:7", "--tls", "--half-close"],
            "--half-close does not go with --tls: TLS closes both directions at once",
        ),
    ],
)
def test_usage_error_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, errors = run_command(capsys, "probe", *args)
    assert status == 2
    assert errors == f"echostat probe: {message}\n"
    assert out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "echostat probe: error: the following arguments are required: TARGET"),
        (["127.0.0.1:7", "--bogus"], "error: unrecognized arguments: --bogus"),
        (["127.0.0.1:7", "--mode", "x"], "echostat probe: error: argument --mode: invalid choice"),
    ],
)
def test_argparse_errors_exit_2_without_traceback(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, _, errors = run_command(capsys, "probe", *args)
    assert status == 2
    assert message in errors


def test_probe_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_command(capsys, "probe", "--help")
    assert status == 0
    for option in (
        "--count",
        "--interval",
        "--size",
        "--half-close",
        "--connect-only",
        "--tls",
        "--ca",
        "--insecure",
        "--sni",
        "--proxy-header",
        "--proxy-source",
        "--source",
        "--connections",
        "--duration",
        "--mode",
        "--window",
        "--timeout",
        "--json",
        "--path",
        "--dscp",
        "--ttl",
        "--mss",
        "--fail-on",
        "--idle-timeout",
        "--idle-resolution",
    ):
        assert f"  {option}" in out, option
    assert "exit status: 0 every byte came back exactly; 1 the path failed" in out
    assert "Percentiles are nearest-rank" in out


def test_plain_echostat_keeps_the_server_flags() -> None:
    """No subcommand is the server as before: --check-config on the repository's config."""
    done = subprocess.run(
        [sys.executable, "-m", "echostat", "--check-config", "--config", "config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("echostat: config.yaml: configuration is valid; max_connections")
