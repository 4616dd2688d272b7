"""`echostat probe udp://...` against echostat, against socat's UDP echo, and against a lossy
server: loss, duplicates and order counted exactly, exit codes by --max-loss."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import StartEchostat
from tests.faulty_servers import DropsEveryNth, UDPFaultyServer
from tests.helpers import (
    DEADLINE_S,
    LOCAL_PORTS,
    RunningProbe,
    fetch_json,
    probe_here,
    probe_json,
    require_program,
    run_probe,
    wait_for,
)

UDP_LISTENER = (
    *LOCAL_PORTS,
    *("--set", "listeners.2.name=udp", "--set", "listeners.2.protocol=udp"),
    *("--set", "listeners.2.port=0"),
)


def test_probe_counts_every_datagram_against_echostat(start_echostat: StartEchostat) -> None:
    """20 datagrams at 100/s to echostat: 0 % loss, exit 0, and echostat counted exactly 20."""
    echostat = start_echostat(*UDP_LISTENER)
    port = echostat.ports["udp"]
    done, report = probe_json(f"udp://127.0.0.1:{port}", "--count", "20", "--rate", "100/s")
    assert done.returncode == 0, report
    assert (report["sent"], report["received"], report["lost"]) == (20, 20, 0)
    assert report["loss_percent"] == 0
    assert report["duplicated"] == report["corrupted"] == 0
    rtt = report["rtt_ms"]
    assert 0 < rtt["min_ms"] <= rtt["p99_ms"] <= rtt["max_ms"] and rtt["count"] == 20

    def counted() -> dict[str, Any] | None:
        udp: dict[str, Any] = fetch_json(echostat.status_port)["udp_listeners"][0]
        return udp if udp["datagrams_sent"] == 20 else None

    udp = wait_for(counted, "echostat to count 20 echoes")
    assert (udp["datagrams_received"], udp["bytes_received"], udp["peers"]) == (20, 20 * 64, 1)


def test_probe_prints_ping_like_lines_and_a_summary(start_echostat: StartEchostat) -> None:
    """Without --json: one line per reply and ping's closing lines, with jitter."""
    echostat = start_echostat(*UDP_LISTENER)
    target = f"udp://127.0.0.1:{echostat.ports['udp']}"
    done = run_probe(target, "--count", "3", "--interval", "0.05", "--size", "100")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"PROBE {target}: 3 datagrams of 100 bytes, 20 a second"
    assert [line.split(" time=")[0] for line in lines[1:4]] == [
        f"100 bytes from {target}: seq={seq}" for seq in (1, 2, 3)
    ]
    assert lines[4] == f"--- {target} udp probe statistics ---"
    assert lines[5] == "3 sent, 3 received, 0 lost (0.0%), 0 duplicated, 0 reordered, 0 corrupted"
    assert lines[6].startswith("rtt min/avg/max/mdev = ")
    assert lines[8].startswith("jitter ") and "RFC 3550" in lines[8]


@pytest.fixture
def socat_udp_echo() -> Iterator[int]:
    """``socat UDP-RECVFROM:PORT,fork EXEC:cat``, an echo server that is not ours."""
    program = require_program("socat", "socat")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [program, f"UDP-RECVFROM:{port},bind=127.0.0.1,fork", "EXEC:cat"],
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_for_udp_echo(port)
        yield port
    finally:
        process.kill()
        process.wait(timeout=DEADLINE_S)


def _wait_for_udp_echo(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            sock.sendto(b"ready?", ("127.0.0.1", port))
            try:
                sock.recv(100)
                return
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise AssertionError(f"no UDP echo on port {port}")


def test_probe_verifies_socat_udp_echo(socat_udp_echo: int) -> None:
    """socat's UDP echo answers every datagram exactly: 0 % loss, exit 0."""
    done, report = probe_json(
        f"udp://127.0.0.1:{socat_udp_echo}", "--count", "10", "--interval", "0.05"
    )
    assert done.returncode == 0, report
    assert (report["sent"], report["received"], report["corrupted"]) == (10, 10, 0)


@pytest.fixture
def lossy_server() -> Iterator[DropsEveryNth]:
    """A UDP echo that drops every tenth datagram."""
    server = DropsEveryNth(10)
    yield server
    server.close()


def test_probe_reports_ten_percent_loss_and_exits_1(lossy_server: DropsEveryNth) -> None:
    """50 datagrams through a server that drops every tenth: 5 lost, 10 %, exit 1."""
    target = f"udp://127.0.0.1:{lossy_server.port}"
    done, report = probe_json(target, "--count", "50", "--rate", "200", "--timeout", "1")
    assert done.returncode == 1
    assert (report["sent"], report["received"], report["lost"]) == (50, 45, 5)
    assert report["loss_percent"] == 10.0
    assert report["ok"] is False
    assert "10.0% of the datagrams lost, more than --max-loss 0" in done.stderr


def test_max_loss_sets_the_threshold_of_the_exit_status(lossy_server: DropsEveryNth) -> None:
    """The same 10 % loss passes with --max-loss 10 and fails with --max-loss 9.9."""
    target = f"udp://127.0.0.1:{lossy_server.port}"
    common = ("--count", "20", "--rate", "200", "--timeout", "1")
    assert probe_json(target, *common, "--max-loss", "10")[0].returncode == 0
    assert probe_json(target, *common, "--max-loss", "9.9")[0].returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--size", "10"), "--size: expected 28..65507 for udp://, got 10"),
        (("--rate", "0"), "--rate: expected a positive number of datagrams per second, got 0"),
        (("--half-close",), "--half-close: not available for udp:// targets"),
        (("--tls",), "--tls: not available for udp:// targets"),
        (("--rate", "10", "--interval", "1"), "--rate and --interval: give one or the other"),
        (("--count", "2000000"), "--count: expected 0 (until Ctrl-C)..1000000, got 2000000"),
        (
            ("--count", "0", "--rate", "1200/s"),
            "--count 0 runs until Ctrl-C: --rate must then be at most 100/s"
            " (every round-trip time is kept); give a --count",
        ),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(args: tuple[str, ...], message: str) -> None:
    """Flags that make no sense for a UDP probe exit 2 with one line naming the flag."""
    done = run_probe("udp://127.0.0.1:9", *args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"echostat probe: {message}"


def test_udp_flags_are_refused_for_a_tcp_target() -> None:
    """--rate and --max-loss belong to udp:// targets; with HOST:PORT they exit 2."""
    done = run_probe("127.0.0.1:9", "--max-loss", "5")
    assert done.returncode == 2
    assert done.stderr.strip() == "echostat probe: --max-loss: only for udp:// targets"


def test_a_closed_port_is_said_unreachable_without_waiting_out_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The kernel's port unreachable (ICMP) answers each datagram: a line each, as ping's, and
    the probe stops waiting at once instead of after --timeout; the JSON counts them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        target = f"udp://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    done = probe_here(capsys, target, "--count", "2", "--interval", "0.05", "--timeout", "20")
    assert time.monotonic() - started < 10, "waited out the 20 s timeout"
    assert done.status == 1
    lines = done.out.splitlines()
    assert lines[1:3] == [f"from {target}: seq={seq} port unreachable" for seq in (1, 2)]
    assert lines[4].endswith(", +2 ICMP errors")
    assert done.err == (
        f"echostat probe: {target}: 100.0% of the datagrams lost (2 ICMP errors),"
        " more than --max-loss 0\n"
    )
    report = probe_here(capsys, target, "--count", "1", "--timeout", "20", "--json").report()
    assert (report["sent"], report["lost"], report["icmp_errors"]) == (1, 1, 1)


def test_path_to_a_closed_port_says_port_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """With --path the kernel's port unreachable answers the report request: the probe says
    so, as it does per datagram without --path, instead of the bare errno text."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        target = f"udp://127.0.0.1:{sock.getsockname()[1]}"
    done = probe_here(capsys, target, "--path", "--timeout", "20")
    why = f"{target}: port unreachable (the answer to the report request): nothing listens there"
    assert (done.status, done.err) == (1, f"echostat probe: {why}\n")
    report = probe_here(capsys, target, "--path", "--timeout", "20", "--json").report()
    assert (report["ok"], report["error"]) == (False, why)


class AnswersOnlyTheFirst(UDPFaultyServer):
    """Echoes the first probe datagram; `unanswered` is set once a second has arrived, which
    it never answers."""

    def __init__(self) -> None:
        self.unanswered = threading.Event()
        super().__init__()

    def answer(self, data: bytes, address: tuple[str, int]) -> None:
        if self.received == 1:
            self.sock.sendto(data, address)
        else:
            self.unanswered.set()


class AnswersNothing(UDPFaultyServer):
    """Answers no datagram; `unanswered` is set once one has arrived."""

    def __init__(self) -> None:
        self.unanswered = threading.Event()
        super().__init__()

    def answer(self, data: bytes, address: tuple[str, int]) -> None:
        self.unanswered.set()


@pytest.mark.parametrize(
    ("server", "status", "summary"),
    [
        (AnswersOnlyTheFirst, 0, r"\n1 sent, 1 received, 0 lost \(0\.0%\),"),
        (AnswersNothing, 1, r"\n(\d+) sent, 0 received, \1 lost \(100\.0%\),"),
    ],
    ids=["after-a-reply", "before-any-reply"],
)
def test_ctrl_c_leaves_out_what_is_within_its_timeout_once_a_reply_came(
    server: type[AnswersOnlyTheFirst | AnswersNothing], status: int, summary: str
) -> None:
    """Ctrl-C while a datagram has an hour left to come back: once a reply came it is left
    out, not counted lost, as the TCP checks leave out their round trip in flight, so the run
    passes on what did end; with no reply at all it counts lost and the run fails, as ping's
    run with no reply does (not "0 sent" and exit 0)."""
    running = server()
    probe = RunningProbe(f"udp://127.0.0.1:{running.port}", "--timeout", "3600")
    try:
        assert running.unanswered.wait(DEADLINE_S)
        done, out, errors = probe.interrupt()
    finally:
        probe.process.kill()
        running.close()
    assert done == status, errors
    assert re.search(summary, out), out
