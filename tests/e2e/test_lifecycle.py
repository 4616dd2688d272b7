"""Graceful shutdown of a real echostat process: stop accepting, drain, EOF, exit status."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.e2e.conftest import StartEchostat
from tests.helpers import DEADLINE_S, LOCAL_PORTS, payload, recv_exactly, recv_to_eof

GRACE_S = 2
CLIENTS = 3
SENT_BYTES = 64 * 1024
READ_BYTES = 1000


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_signal_drains_open_connections_then_exits_0(
    start_echostat: StartEchostat, signum: signal.Signals
) -> None:
    """After the signal: new connects are refused, open clients echo through the grace
    period, then each gets back every byte it sent and EOF, and the process exits 0."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", f"shutdown_grace_s={GRACE_S}")
    address = ("127.0.0.1", echostat.echo_port)
    clients = [socket.create_connection(address, timeout=DEADLINE_S) for _ in range(CLIENTS)]
    before = [payload(SENT_BYTES, seed=client) for client in range(CLIENTS)]
    after = [payload(SENT_BYTES, seed=CLIENTS + client) for client in range(CLIENTS)]
    for client, data in zip(clients, before, strict=True):
        client.sendall(data)
        assert recv_exactly(client, READ_BYTES) == data[:READ_BYTES]

    signalled_at = time.monotonic()
    echostat.signal(signum)
    echostat.wait_for_line("shutting down")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=DEADLINE_S)

    for client, old, new in zip(clients, before, after, strict=True):
        client.sendall(new)
        assert recv_exactly(client, SENT_BYTES) == old[READ_BYTES:] + new[:READ_BYTES]
    for client, new in zip(clients, after, strict=True):
        assert recv_to_eof(client) == new[READ_BYTES:]
        client.close()
    assert time.monotonic() - signalled_at > GRACE_S - 1

    assert echostat.wait() == 0
    assert sum("shutting down" in line for line in echostat.log) == 1, echostat.log
    assert not [line for line in echostat.log if "Traceback" in line or " ERROR " in line]


def test_second_signal_during_drain_exits_at_once(start_echostat: StartEchostat) -> None:
    """A second SIGTERM while connections drain ends the process at once, with status 1."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", "shutdown_grace_s=600")
    with socket.create_connection(("127.0.0.1", echostat.echo_port), timeout=DEADLINE_S):
        echostat.signal(signal.SIGTERM)
        echostat.wait_for_line("shutting down")
        echostat.signal(signal.SIGTERM)
        assert echostat.wait() == 1
    assert "SIGTERM again: exiting now" in echostat.log[-1]


def test_ctrl_c_with_an_idle_client_says_at_once_what_it_waits_for(
    start_echostat: StartEchostat,
) -> None:
    """Ctrl-C with one idle client logs at once how long it waits, for how many connections,
    and that a second Ctrl-C exits; at the end, in the singular, that one was still open."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", "shutdown_grace_s=1")
    with socket.create_connection(("127.0.0.1", echostat.echo_port), timeout=DEADLINE_S) as idle:
        echostat.signal(signal.SIGINT)
        echostat.wait_for_line("SIGINT: stopping gracefully; a second Ctrl-C")
        echostat.wait_for_line("waiting up to 1 s for 1 open connection to close")
        assert recv_to_eof(idle) == b""
    assert echostat.wait() == 0
    assert echostat.log[-1].endswith(
        "stopped; 1 connection was still open after the grace period (sent EOF)"
    ), echostat.log


def test_stop_with_nothing_open_says_no_connection_waited(start_echostat: StartEchostat) -> None:
    """With no client, the stop says there was nothing to wait for and counts no leftovers."""
    echostat = start_echostat(*LOCAL_PORTS)
    echostat.signal(signal.SIGTERM)
    assert echostat.wait() == 0
    assert any(line.endswith("no open connections") for line in echostat.log), echostat.log
    assert echostat.log[-1].endswith(" stopped"), echostat.log
    assert not [line for line in echostat.log if "0 connections" in line]
