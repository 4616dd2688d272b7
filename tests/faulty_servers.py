"""Echo servers that each break the echo in one way, for checking that a client catches it."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from echostat.probe.udp import MAGIC
from tests.helpers import DEADLINE_S, recv_exactly, reset_on_close

Behaviour = Callable[[socket.socket], None]
"""Serves one accepted connection; the connection is closed when it returns."""


def flips_byte(at: int) -> Behaviour:
    """Echoes faithfully except that it flips the lowest bit of stream byte `at`."""

    def serve(sock: socket.socket) -> None:
        echoed = 0
        while data := sock.recv(65536):
            if echoed <= at < echoed + len(data):
                index = at - echoed
                data = data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]
            echoed += len(data)
            sock.sendall(data)

    return serve


def drops_tail(sock: socket.socket) -> None:
    """Echoes the first half of the first read, then closes the connection (an orderly EOF)."""
    data = sock.recv(65536)
    sock.sendall(data[: len(data) // 2])


def never_answers(sock: socket.socket) -> None:
    """Reads everything and sends nothing back."""
    while sock.recv(65536):
        pass


def resets(sock: socket.socket) -> None:
    """Reads the first bytes, then closes with a TCP reset."""
    sock.recv(65536)
    reset_on_close(sock)
    sock.close()  # now, before socketserver's orderly shutdown could send a FIN


def replays_first(sock: socket.socket) -> None:
    """Answers every read with the bytes of the first one: an echo of old data."""
    first = sock.recv(65536)
    data = first
    while data:
        sock.sendall(first[: len(data)])
        data = sock.recv(65536)


def crosses_pairs() -> Behaviour:
    """Pairs connections in the order they arrive and sends what each one sends to the other
    of its pair: every byte comes back, on the wrong connection."""
    lock = threading.Lock()
    waiting: list[tuple[socket.socket, threading.Event, list[socket.socket]]] = []

    def serve(sock: socket.socket) -> None:
        paired = threading.Event()
        partner: list[socket.socket] = []
        with lock:
            if waiting:
                other, other_paired, other_partner = waiting.pop()
                other_partner.append(sock)
                partner.append(other)
                other_paired.set()
                paired.set()
            else:
                waiting.append((sock, paired, partner))
        if not paired.wait(DEADLINE_S):
            return
        while data := sock.recv(65536):
            partner[0].sendall(data)

    return serve


@contextmanager
def faulty_server(behaviour: Behaviour) -> Iterator[int]:
    """A threaded TCP server on 127.0.0.1 serving each connection with `behaviour`; yields
    its port, and stops (joining its thread) on exit."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                behaviour(self.request)
            except ConnectionError:
                pass  # the client gave up first: nothing to report

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

    with Server(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(timeout=10)


def echoes(sock: socket.socket) -> None:
    """Echoes faithfully: a plain RFC 862 server, which knows nothing of PROXY headers."""
    while data := sock.recv(65536):
        sock.sendall(data)


def reports_peer(peer: str) -> Behaviour:
    """Speaks first as an echostat listener with ``report: true`` does, but names `peer` as
    the client it saw (as across a NAT), then echoes."""

    def serve(sock: socket.socket) -> None:
        sock.sendall(b'ECHOSTAT-REPORT {"peer":"%s","local":null,"syn":null}\r\n' % peer.encode())
        echoes(sock)

    return serve


def resets_at_accept(sock: socket.socket) -> None:
    """Closes every connection with a TCP reset as soon as it is accepted, reading nothing:
    what a server at its connection limit, a firewall or a balancer with no backend does."""
    reset_on_close(sock)
    sock.close()


def holds_second_echo(size: int) -> Behaviour:
    """Echoes `size`-byte messages, except that it holds the second one's echo until the third
    message has come and then sends both: a reply that comes late, after the next request."""

    def serve(sock: socket.socket) -> None:
        sock.sendall(recv_exactly(sock, size))
        held = recv_exactly(sock, size)
        sock.sendall(held + recv_exactly(sock, size))
        while data := sock.recv(65536):
            sock.sendall(data)

    return serve


def swaps_first_messages(size: int) -> Behaviour:
    """Pairs connections in the order they arrive, waits for the first `size`-byte message of
    both, and answers each with the other's: a balancer that crossed two clients' replies."""
    lock = threading.Lock()
    pairs: list[tuple[threading.Barrier, list[bytes]]] = []

    def serve(sock: socket.socket) -> None:
        with lock:
            if not pairs or len(pairs[-1][1]) == 2:
                pairs.append((threading.Barrier(2, timeout=DEADLINE_S), []))
            barrier, messages = pairs[-1]
            mine = len(messages)
            messages.append(b"")
        messages[mine] = recv_exactly(sock, size)
        barrier.wait()
        sock.sendall(messages[1 - mine])
        while sock.recv(65536):
            pass

    return serve


class UDPFaultyServer:
    """A UDP echo server in a thread that answers each probe datagram with `answer`; `port`
    is its port on 127.0.0.1, `close` stops it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def answer(self, data: bytes, address: tuple[str, int]) -> None:
        """Send back what `data` (the `received`th probe datagram) should get."""
        raise NotImplementedError

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if not data.startswith(MAGIC):
                continue  # a stray datagram to a recently freed port, not the probe's
            self.received += 1
            self.answer(data, address)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE_S)
        self.sock.close()


class DropsEveryNth(UDPFaultyServer):
    """Drops the `nth`, 2 `nth`, ... probe datagram it receives and echoes the others."""

    def __init__(self, nth: int) -> None:
        self.nth = nth
        super().__init__()

    def answer(self, data: bytes, address: tuple[str, int]) -> None:
        if self.received % self.nth:
            self.sock.sendto(data, address)


class SwapsAndRepeatsPairs(UDPFaultyServer):
    """Answers each pair of probe datagrams with the second twice, then the first: every one
    comes back, one of each pair twice and the other out of order."""

    def __init__(self) -> None:
        self._held: bytes | None = None
        super().__init__()

    def answer(self, data: bytes, address: tuple[str, int]) -> None:
        if self._held is None:
            self._held = data
            return
        for reply in (data, data, self._held):
            self.sock.sendto(reply, address)
        self._held = None
