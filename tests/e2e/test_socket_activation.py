"""Started with systemd's LISTEN_FDS, echostat serves the sockets it inherits."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator

import pytest

from echostat.server.udp import read_kernel_drops
from tests.helpers import (
    DEADLINE_S,
    REPO,
    EchostatProcess,
    fetch_json,
    payload,
    recv_exactly,
    recv_to_eof,
)


@pytest.fixture
def activation_sockets() -> Iterator[dict[str, socket.socket]]:
    """Listening sockets for the echo listener and the status page, held by the test the way
    systemd holds them across restarts."""
    sockets = {}
    for name in ("main", "status"):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sockets[name] = sock
    yield sockets
    for sock in sockets.values():
        sock.close()


def start(sockets: dict[str, socket.socket]) -> EchostatProcess:
    config = str(REPO / "config.yaml")
    args = ["--config", config, "--set", "shutdown_grace_s=1"]
    return EchostatProcess(args, activation=sockets).start()


def test_inherited_sockets_serve_the_listener_and_the_status_page(
    activation_sockets: dict[str, socket.socket],
) -> None:
    """The startup line names the inherited ports, not config.yaml's, and both answer."""
    echostat = start(activation_sockets)
    try:
        assert echostat.echo_port == activation_sockets["main"].getsockname()[1]
        assert echostat.status_port == activation_sockets["status"].getsockname()[1]
        with socket.create_connection(("127.0.0.1", echostat.echo_port), DEADLINE_S) as client:
            client.sendall(b"activated")
            assert recv_exactly(client, 9) == b"activated"
        with socket.create_connection(("127.0.0.1", echostat.status_port), DEADLINE_S) as http:
            http.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            assert recv_exactly(http, 12) == b"HTTP/1.1 200"
    finally:
        echostat.signal(signal.SIGTERM)
        assert echostat.wait() == 0


def test_a_restart_refuses_no_connection(activation_sockets: dict[str, socket.socket]) -> None:
    """A client that connects while echostat is down waits in the backlog of the socket the
    supervisor (here, the test) keeps open, and the next echostat echoes it."""
    first = start(activation_sockets)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    port = activation_sockets["main"].getsockname()[1]
    data = payload(4096)
    with socket.create_connection(("127.0.0.1", port), DEADLINE_S) as client:
        client.sendall(data)
        second = start(activation_sockets)
        try:
            assert recv_exactly(client, len(data)) == data
        finally:
            second.signal(signal.SIGTERM)
            assert second.wait() == 0


def test_an_inherited_datagram_socket_serves_a_udp_listener(
    activation_sockets: dict[str, socket.socket],
) -> None:
    """A socket unit with ListenDatagram= and FileDescriptorName=udp serves the UDP listener
    called udp: datagrams sent to the inherited port come back."""
    datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams.bind(("127.0.0.1", 0))
    udp_flags = [
        *("--set", "listeners.2.name=udp", "--set", "listeners.2.protocol=udp"),
        *("--set", "listeners.2.port=0"),
    ]
    args = ["--config", str(REPO / "config.yaml"), *udp_flags, "--set", "shutdown_grace_s=1"]
    echostat = EchostatProcess(args, activation={**activation_sockets, "udp": datagrams})
    try:
        echostat.start()
        assert echostat.ports["udp"] == datagrams.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(DEADLINE_S)
            client.connect(datagrams.getsockname())
            client.send(b"activated over udp")
            assert client.recv(100) == b"activated over udp"
    finally:
        datagrams.close()
        echostat.signal(signal.SIGTERM)
        assert echostat.wait() == 0


def test_workers_sharing_an_inherited_datagram_socket_count_its_kernel_drops_once() -> None:
    """Two workers read one inherited UDP socket: receive_buffer is the kernel's count of
    datagrams it dropped there, not once per worker, so every datagram sent is received or
    counted dropped."""
    datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams.bind(("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for _ in range(2000):  # far more than the receive buffer holds until echostat reads
            client.sendto(b"d" * 1000, datagrams.getsockname())
    dropped = read_kernel_drops([datagrams])
    assert dropped, "the kernel counted no drop"
    udp_flags = [
        *("--set", "listeners.0.protocol=udp", "--set", "workers=2"),
        *("--set", "listeners.1.port=0", "--set", "status.port=0"),
    ]
    args = ["--config", str(REPO / "config.yaml"), *udp_flags, "--set", "shutdown_grace_s=1"]
    echostat = EchostatProcess(args, activation={"main": datagrams})
    try:
        echostat.start()
        for _ in range(2):  # each worker has read the socket's count once it warns of the drops
            echostat.wait_for_line("udp listener main: dropped")
        (udp,) = fetch_json(echostat.status_port)["udp_listeners"]
        assert udp["dropped_by_reason"] == {"receive_buffer": dropped}
        assert udp["datagrams_received"] + dropped == 2000
    finally:
        datagrams.close()
        echostat.signal(signal.SIGTERM)
        assert echostat.wait() == 0


def refused_start(activation: dict[str, socket.socket], *flags: str) -> str:
    """The one log line of an echostat that exits 2 at start with these inherited sockets."""
    ports = ("--set", "listeners.0.port=0", "--set", "listeners.1.port=0")
    args = ["--config", str(REPO / "config.yaml"), *ports, *flags]
    echostat = EchostatProcess(args, activation=activation)
    try:
        assert echostat.wait() == 2, echostat.log
    finally:
        echostat.stop()
    assert echostat.tracebacks() == [], echostat.log
    (line,) = echostat.log
    return line


@pytest.mark.parametrize(
    ("names", "flags", "refusal"),
    [
        (
            {"udp": "main", "status": "status"},
            ("--set", "listeners.1.protocol=udp", "--set", "listeners.1.name=udp"),
            'listeners[1]: the inherited socket "udp" is a stream socket, but the listener is'
            " UDP; give its socket unit ListenDatagram= instead of ListenStream=",
        ),
        (
            {"reprot": "main", "status": "status"},
            (),
            'the inherited socket "reprot" (FileDescriptorName=) names no listener;'
            " name it after one of: main, report, status",
        ),
        (
            {"main": "main", "status": "status"},
            ("--set", "listeners.0.name=status"),
            'listeners[0].name: "status" names the status page\'s inherited socket; give the'
            " listener (and its socket unit's FileDescriptorName=) another name",
        ),
    ],
    ids=["stream-socket-for-udp", "names-no-listener", "listener-named-status"],
)
def test_inherited_sockets_nothing_would_serve_right_are_refused_naming_the_fix(
    activation_sockets: dict[str, socket.socket],
    names: dict[str, str],
    flags: tuple[str, ...],
    refusal: str,
) -> None:
    """Exit 2 with one line naming the key and the fix, where echostat would otherwise crash
    (a stream socket for a UDP listener: uvloop's traceback), hold clients in a backlog no
    one accepts from (a FileDescriptorName= that is no listener's, nor status), or serve the
    status page's socket as echo (a listener named "status")."""
    sockets = {name: activation_sockets[held] for name, held in names.items()}
    line = refused_start(sockets, *flags)
    assert line.endswith(refusal), line


@pytest.mark.parametrize("workers", [1, 2])
def test_the_startup_line_and_the_api_name_the_inherited_sockets_addresses(workers: int) -> None:
    """Socket units on ::1 where config.yaml says 127.0.0.1: the startup lines, the page's URL
    and /api/stats give the addresses echostat really serves, not config.yaml's."""
    sockets = {}
    for name in ("main", "status"):
        sockets[name] = socket.socket(socket.AF_INET6)
        sockets[name].bind(("::1", 0))
        sockets[name].listen(8)
    args = ["--config", str(REPO / "config.yaml"), "--set", "listeners.1.port=0"]
    echostat = EchostatProcess([*args, "--set", f"workers={workers}"], activation=sockets)
    try:
        echostat.start()
        main, status = (sockets[name].getsockname()[1] for name in ("main", "status"))
        for line in echostat.log:
            assert f"on 127.0.0.1:{main}" not in line
        assert any(f"main on [::1]:{main}," in line for line in echostat.log), echostat.log
        assert any(f"status page on http://[::1]:{status}/" in line for line in echostat.log)
        with socket.create_connection(("::1", status), DEADLINE_S) as http:
            http.sendall(b"GET /api/stats HTTP/1.0\r\nHost: [::1]\r\n\r\n")
            document = json.loads(recv_to_eof(http).split(b"\r\n\r\n", 1)[1])
        hosts = {listener["name"]: listener["host"] for listener in document["listeners"]}
        assert hosts == {"main": "::1", "report": "127.0.0.1"}
    finally:
        for sock in sockets.values():
            sock.close()
        echostat.signal(signal.SIGTERM)
        assert echostat.wait() == 0
