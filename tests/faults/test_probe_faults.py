"""``echostat probe`` against servers that break the echo, and through TLS and PROXY listeners."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import uvloop

from echostat.cli import build_parser
from echostat.probe.console import Console
from echostat.probe.engine import Run, Stream
from echostat.probe.flags import endpoint_for, options_from
from echostat.probe.options import Options
from echostat.probe.ping import round_trips
from echostat.probe.results import Result
from tests.faults.conftest import StartEchostat
from tests.faults.test_tls import tls_listener
from tests.faulty_servers import (
    Behaviour,
    crosses_pairs,
    drops_tail,
    faulty_server,
    flips_byte,
    holds_second_echo,
    never_answers,
    replays_first,
    resets,
    resets_at_accept,
    swaps_first_messages,
)
from tests.helpers import (
    DEADLINE_S,
    RunningProbe,
    fetch_json,
    probe_here,
    probe_json,
    recv_exactly,
    run_probe,
    start_probe,
    wait_for,
)

ROUND_TRIPS = ("--count", "3", "--interval", "0", "--timeout", "2")


@pytest.mark.parametrize(
    ("behaviour", "reason", "message"),
    [
        (
            flips_byte(100),
            "mismatch",
            r"connection 0: byte 100 differs from what was sent: expected 0x(..), received "
            r"0x(..) \(round trip 2, 64-byte message\)",
        ),
        (
            replays_first,
            "mismatch",
            r"connection 0: byte 64 differs from what was sent: expected 0x(..), received "
            r"0x(..) \(round trip 2, 64-byte message\)",
        ),
        (
            drops_tail,
            "eof",
            r"connection 0: server closed the connection: round trip 1: 32 of 64 bytes came back",
        ),
        (
            never_answers,
            "timeout",
            r"connection 0: round trip 1: 0 of 64 bytes came back within 2 s",
        ),
        (
            resets,
            "reset",
            r"connection 0: reset by the server: round trip 1: 0 of 64 bytes came back",
        ),
    ],
    ids=["flips-a-byte", "replays-old-data", "drops-the-tail", "never-answers", "resets"],
)
def test_a_broken_echo_exits_1_naming_connection_offset_and_bytes(
    behaviour: Behaviour, reason: str, message: str
) -> None:
    with faulty_server(behaviour) as port:
        done, report = probe_json(f"127.0.0.1:{port}", *ROUND_TRIPS)
    assert done.returncode == 1
    found = re.fullmatch(f"echostat probe: {message}\n", done.stderr)
    assert found, done.stderr
    failure = report["first_failure"]
    assert (report["ok"], report["failures"], failure["reason"]) == (False, 1, reason)
    assert failure["message"] == done.stderr.removeprefix("echostat probe: ").rstrip("\n")
    if reason == "mismatch":
        expected, received = (int(byte, 16) for byte in found.groups())
        assert (failure["expected"], failure["received"]) == (expected, received)
        assert failure["offset"] == int(re.findall(r"byte (\d+)", message)[0])
        assert expected != received


def test_load_run_counts_each_connection_that_fails() -> None:
    """Every connection of a load run meets the flipped byte; each one is counted."""
    with faulty_server(flips_byte(1000)) as port:
        done, report = probe_json(f"127.0.0.1:{port}", "--connections", "3", "--duration", "1")
    assert done.returncode == 1
    assert report["connections"] == {"opened": 3, "failed": 3}
    assert report["first_failure"]["offset"] == 1000
    assert "(and 2 more failures)" in done.stderr


def test_a_load_run_with_no_round_trip_back_prints_no_round_trip_times(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that never answers: the table says 0 verified and gives no rtt rows of zeros,
    as the ping-like summary leaves its rtt lines out."""
    with faulty_server(never_answers) as port:
        done = probe_here(capsys, f"127.0.0.1:{port}", "--duration", "0.2", "--timeout", "0.5")
    assert done.status == 1
    assert "round trips    1 sent, 0 verified\n" in done.out
    assert "rtt ms" not in done.out, done.out


def test_a_server_that_mixes_up_connections_is_caught() -> None:
    """Each connection's payload differs from the others', so bytes that come back on the
    wrong connection fail both at their first byte."""
    with faulty_server(crosses_pairs()) as port:
        done, report = probe_json(f"127.0.0.1:{port}", "--connections", "2", "--duration", "1")
    assert done.returncode == 1
    assert report["connections"] == {"opened": 2, "failed": 2}
    assert report["first_failure"]["reason"] == "mismatch"
    assert report["first_failure"]["offset"] == 0


def test_half_close_that_gets_no_eof_exits_1() -> None:
    """A server that echoes the bytes but never closes its side fails the half-close check."""

    probe_done = threading.Event()

    def echoes_without_eof(sock: socket.socket) -> None:
        sock.sendall(sock.recv(65536))
        while sock.recv(65536):
            pass
        probe_done.wait(DEADLINE_S)

    with faulty_server(echoes_without_eof) as port:
        done = run_probe(f"127.0.0.1:{port}", "--half-close", "--size", "100", "--timeout", "2")
        probe_done.set()
    assert done.returncode == 1
    assert done.stderr == (
        "echostat probe: connection 0: all 100 bytes came back but no EOF after them within 2 s\n"
    )


def test_tls_probe_reports_protocol_and_cipher(
    start_echostat: StartEchostat, tls_files: dict[str, Path]
) -> None:
    echostat = start_echostat(listeners=tls_listener(tls_files["cert"], tls_files["key"]))
    target = f"127.0.0.1:{echostat.ports['tls']}"
    done, report = probe_json(target, "--tls", "--ca", str(tls_files["cert"]), *ROUND_TRIPS)
    assert done.returncode == 0, done.stderr
    assert report["tls"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert report["tls"]["cipher"]
    assert report["verified"] == 3
    done = run_probe(target, "--tls", "--insecure", "--count", "1")
    assert done.returncode == 0, done.stderr
    assert re.search(r"connected to \S+ in [\d.]+ ms, TLSv1\.[23] \S+ in [\d.]+ ms", done.stdout)


def test_tls_probe_without_the_ca_exits_1_saying_what_to_pass(
    start_echostat: StartEchostat, tls_files: dict[str, Path]
) -> None:
    echostat = start_echostat(listeners=tls_listener(tls_files["cert"], tls_files["key"]))
    done = run_probe(f"127.0.0.1:{echostat.ports['tls']}", "--tls", "--count", "1")
    assert done.returncode == 1
    assert "TLS handshake failed: self-signed certificate" in done.stderr
    assert "(pass --ca FILE with the server's CA, or --insecure)" in done.stderr


def test_tls_probe_checks_the_certificate_against_sni(
    start_echostat: StartEchostat, tls_files: dict[str, Path]
) -> None:
    """--sni NAME is the name the certificate must carry (this one is for 127.0.0.1 only)."""
    echostat = start_echostat(listeners=tls_listener(tls_files["cert"], tls_files["key"]))
    target = f"127.0.0.1:{echostat.ports['tls']}"
    done = run_probe(target, "--tls", "--ca", str(tls_files["cert"]), "--sni", "echo.example")
    assert done.returncode == 1
    assert "TLS handshake failed: Hostname mismatch" in done.stderr
    assert "'echo.example'" in done.stderr


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_makes_echostat_see_the_proxy_source(
    start_echostat: StartEchostat, version: str
) -> None:
    """Through a PROXY listener the peer echostat reports is --proxy-source, and the echo
    still verifies; the probe runs until Ctrl-C."""
    listener = {"name": "lb", "host": "127.0.0.1", "port": 0, "proxy_protocol": True}
    echostat = start_echostat(listeners=[{**listener, "proxy_trusted": ["127.0.0.0/8"]}])
    target = f"127.0.0.1:{echostat.ports['lb']}"
    flags = ["--proxy-header", version, "--proxy-source", "203.0.113.7:40000"]
    probe = RunningProbe(target, *flags)
    try:

        def proxied() -> dict[str, Any] | None:
            rows = fetch_json(echostat.status_port, "/api/connections")["connections"]
            return next((row for row in rows if row["bytes_received"] > 0), None)

        row = wait_for(proxied, "the probe's connection to echo")
        assert row["peer"] == "203.0.113.7:40000"
        assert row["via"].startswith("127.0.0.1:")
    finally:
        status, out, errors = probe.interrupt()
    assert status == 0, errors
    assert re.search(r"^\d+ sent, \d+ verified, 0 failed", out, re.MULTILINE), out


RESET_AT_ACCEPT = "connection 0: reset by the server: "


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (("--count", "3", "--interval", "0"), "round trip 1: 0 of 64 bytes came back"),
        (("--connections", "1", "--duration", "1"), "round trip 1: 0 of 64 bytes came back"),
        (
            ("--connections", "1", "--duration", "1", "--mode", "stream"),
            "(0 of the first 65536 bytes came back|262144 bytes in flight did not come back)",
        ),
        (("--half-close",), "0 of 64 bytes came back"),
    ],
    ids=["round-trips", "load", "stream", "half-close"],
)
def test_a_reset_at_accept_is_reported_like_a_later_one(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], what: str
) -> None:
    """A server that resets each connection as soon as it accepts it (a limit, a firewall,
    a balancer with no backend): the reset is named, exit 1, and --json has its document."""
    with faulty_server(resets_at_accept) as port:
        done = probe_here(capsys, f"127.0.0.1:{port}", *args, "--json")
        shown = probe_here(capsys, f"127.0.0.1:{port}", *args)
    for run in (done, shown):
        assert run.status == 1
        assert run.err.startswith(f"echostat probe: {RESET_AT_ACCEPT}"), run.err
        assert re.search(what, run.err), run.err
    assert "statistics ---" in shown.out or "--half-close" in args, shown.out
    report = done.report()
    assert (report["ok"], report["failures"]) == (False, 1)
    assert report["first_failure"]["reason"] == "reset"
    assert report["error"] == done.err.removeprefix("echostat probe: ").rstrip("\n")


def test_echostat_at_its_limit_is_reported(start_echostat: StartEchostat) -> None:
    """echostat at `limits.max_connections` closes each new connection as soon as it accepted
    it, after the probe's handshake: each mode names the connection, exits 1, and --json has
    its document (before, writing to the closed connection raised a RuntimeError)."""
    echostat = start_echostat(limits={"max_connections": 1})
    with socket.create_connection(("127.0.0.1", echostat.echo_port)):
        wait_for(lambda: fetch_json(echostat.status_port)["connections"]["active"], "a connection")
        # Every mode against a server that resets at accept is checked above; these two
        # raised most often.
        for args in (
            ("--count", "3", "--interval", "0"),
            ("--connections", "1", "--duration", "1", "--mode", "stream"),
        ):
            # A process of its own, as run by hand: in-process, the close tends to come later.
            done, report = probe_json(f"127.0.0.1:{echostat.echo_port}", *args)
            assert done.returncode == 1
            closed = "(reset by the server|server closed the connection)"
            assert re.match(f"echostat probe: connection \\d: {closed}", done.stderr), done.stderr
            assert report["error"] == done.stderr.removeprefix("echostat probe: ").rstrip("\n")


TCP_CLOSE = 7
"""`tcpi_state` (the first byte of TCP_INFO) of a connection that is over."""


async def test_a_write_failing_after_the_servers_close_is_named_as_its_close() -> None:
    """The server closed, and reset the bytes that came after its close, before the probe had
    read the close (the race of echostat at its limit under load): the probe's write fails
    with EPIPE, and the connection is named as closed by the server, not as "lost while the
    run was active ([Errno 32] Broken pipe)"."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        accepted.close()
        client.send(b"x")  # the closed end answers with a reset
        wait_for(
            lambda: client.getsockopt(socket.SOL_TCP, socket.TCP_INFO, 1)[0] == TCP_CLOSE,
            "the reset",
        )
        run = Run(stop_on_failure=False)
        _, stream = await asyncio.get_running_loop().create_connection(
            lambda: Stream(run, 0, window=1024, chunk=1024), sock=client
        )
        stream.begin()
        await asyncio.wait_for(stream.closed, DEADLINE_S)
    assert [(failure.reason, failure.message) for failure in run.failures] == [
        (
            "eof",
            "connection 0: server closed the connection: 1024 bytes in flight did not come back",
        )
    ]


def test_a_lost_round_trip_is_counted_and_the_next_one_made(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Round trip 2's echo comes only after round trip 3 was sent: round trip 2 is lost (as
    ping's), the probe goes on, its late bytes are still verified, and the run fails."""
    with faulty_server(holds_second_echo(64)) as port:
        done = probe_here(capsys, f"127.0.0.1:{port}", "-c", "3", "-i", "0", "-W", "1")
    assert done.status == 1
    assert done.err == (
        "echostat probe: connection 0: round trip 2: 0 of 64 bytes came back within 1 s\n"
    )
    lines = done.out.splitlines()
    assert "seq=1 time=" in lines[2]
    assert lines[3] == f"no echo from 127.0.0.1:{port}: seq=2 (0 of 64 bytes within 1 s)"
    assert "seq=3 time=" in lines[4]
    assert re.match(
        r"3 sent, 2 verified, 1 failed, connect [\d.]+ ms, 33.333% loss, time", lines[6]
    )


def test_runs_with_their_own_seeds_are_not_crossed_unseen() -> None:
    """Two probes through a server that swaps their replies: with a seed each (the default)
    both fail at byte 0; given the same --seed they send the same bytes, and pass."""

    async def two_probes(port: int, *flags: str) -> list[Result]:
        """Two ping-like runs of one round trip at once, as two `echostat probe` would be."""
        runs = []
        for _ in range(2):
            options = options_from(
                build_parser().parse_args(["probe", f"127.0.0.1:{port}", "-c", "1", *flags])
            )
            assert isinstance(options, Options)
            runs.append(
                round_trips(options, endpoint_for(options), Console(quiet=True), asyncio.Event())
            )
        return list(await asyncio.gather(*runs))

    with faulty_server(swaps_first_messages(64)) as port:
        crossed = uvloop.run(two_probes(port))
        same_seed = uvloop.run(two_probes(port, "--seed", "7"))
    assert [(f.reason, f.offset) for result in crossed for f in result.failures] == [
        ("mismatch", 0)
    ] * 2
    assert [result.failures for result in same_seed] == [[], []]


def test_ctrl_c_reports_at_once_without_waiting_out_the_round_trip_in_flight() -> None:
    """Ctrl-C while round trip 2's echo never comes, with an hour's --timeout: the summary comes
    at once, as ping's, counting the round trips that ended; the one in flight is left out, so
    the run neither waits out the hour nor fails for it."""
    second_came = threading.Event()

    def answers_only_the_first(sock: socket.socket) -> None:
        sock.sendall(recv_exactly(sock, 64))
        recv_exactly(sock, 64)
        second_came.set()
        while sock.recv(65536):
            pass

    with faulty_server(answers_only_the_first) as port:
        probe = RunningProbe(f"127.0.0.1:{port}", "--timeout", "3600")
        try:
            assert second_came.wait(DEADLINE_S)
            status, out, errors = probe.interrupt()
        finally:
            probe.process.kill()
    assert status == 0, errors
    assert re.search(r"\n1 sent, 1 verified, 0 failed, connect [\d.]+ ms, 0% loss, time", out), out


def interrupted_once(ready: threading.Event, probe: subprocess.Popen[str]) -> tuple[int, str, str]:
    """SIGINT to `probe` once `ready` is set; its exit status, stdout and stderr."""
    try:
        assert ready.wait(DEADLINE_S)
        probe.send_signal(signal.SIGINT)
        out, errors = probe.communicate(timeout=DEADLINE_S)
    finally:
        probe.kill()
    return probe.returncode, out, errors


def test_ctrl_c_while_a_half_close_waits_for_eof_is_no_failure() -> None:
    """Ctrl-C while the half-close waits for an EOF the server holds back: the probe stops and
    reports the run interrupted, not as a connection "lost while the run was active (None)"
    when it was the probe that closed it."""
    got_eof, released = threading.Event(), threading.Event()

    def echoes_but_keeps_open(sock: socket.socket) -> None:
        while data := sock.recv(65536):
            sock.sendall(data)
        got_eof.set()
        released.wait(DEADLINE_S)

    with faulty_server(echoes_but_keeps_open) as port:
        probe = start_probe(f"127.0.0.1:{port}", "--half-close", "--timeout", "3600", "--json")
        try:
            status, out, errors = interrupted_once(got_eof, probe)
        finally:
            released.set()
    assert status == 0, errors
    report = json.loads(out)
    assert errors == "", report
    assert (report["ok"], report["interrupted"], report["eof_ms"], report["error"]) == (
        True,
        True,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("flags", "summary", "what"),
    [
        ((), r"\n1 sent, 0 verified, 1 failed, connect [\d.]+ ms, 100% loss, time", "round trip 1"),
        (
            ("--duration", "600", "--mode", "pingpong"),
            r"load statistics, interrupted after [\d.]+ s ---\nconnections +1 opened, 1 failed\n",
            "round trip 1",
        ),
        (
            ("--duration", "600", "--mode", "stream"),
            r"load statistics, interrupted after [\d.]+ s ---\nconnections +1 opened, 1 failed\n",
            "262144 bytes in flight",
        ),
    ],
    ids=["round-trips", "load-pingpong", "load-stream"],
)
def test_ctrl_c_before_anything_came_back_fails_the_run_at_once(
    flags: tuple[str, ...], summary: str, what: str
) -> None:
    """A server that never answers, Ctrl-C with an hour's --timeout: the summary or table
    comes at once, and as ping's run with no reply, the run fails naming what never came
    back (before, "0 sent" and exit 0)."""
    first_came = threading.Event()

    def reads_and_never_answers(sock: socket.socket) -> None:
        sock.recv(65536)
        first_came.set()
        never_answers(sock)

    with faulty_server(reads_and_never_answers) as port:
        probe = start_probe(f"127.0.0.1:{port}", "--timeout", "3600", *flags)
        status, out, errors = interrupted_once(first_came, probe)
    assert status == 1, errors
    assert re.search(summary, out), out
    assert errors.startswith(f"echostat probe: connection 0: {what}"), errors
    assert errors.endswith(" before the interrupt\n"), errors
