"""UDP senders for the flood tests, run inside a namespace: a flood from one source and a
steady source beside it. Both are bounded in count and time.

    python -m tests.net.flood flood HOST PORT COUNT SECONDS     prints: SENT SECONDS
    python -m tests.net.flood steady HOST PORT SECONDS          prints: SENT ECHOED

The flood sends 64-byte datagrams with sendmmsg (through ctypes: Python has no binding), 64
per system call, so that one Python process sends faster than echostat reads. The steady
source sends one numbered datagram every 10 ms and counts the distinct echoes it gets back,
waiting up to a second after its last one for the stragglers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import select
import socket
import sys
import time

BATCH = 64
PAYLOAD = b"f" * 64
INTERVAL_S = 0.01
LATE_S = 1.0
"""How long the steady source waits for echoes after its last datagram."""


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("header", _MsgHdr), ("length", ctypes.c_uint)]


def flood(host: str, port: int, count: int, seconds: float) -> tuple[int, float]:
    """Send up to `count` datagrams to `host`:`port` within `seconds`; (sent, elapsed s)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buffer = ctypes.create_string_buffer(PAYLOAD, len(PAYLOAD))
    iov = _IoVec(ctypes.cast(buffer, ctypes.c_void_p), len(PAYLOAD))
    messages = (_MMsgHdr * BATCH)()
    for message in messages:
        message.header.iov = ctypes.pointer(iov)
        message.header.iovlen = 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sent, started = 0, time.monotonic()
        while sent < count and (elapsed := time.monotonic() - started) < seconds:
            done = libc.sendmmsg(sock.fileno(), messages, min(BATCH, count - sent), 0)
            sent += max(done, 0)  # -1: ECONNREFUSED or ENOBUFS, a datagram lost, not an error
    return sent, elapsed


def steady(host: str, port: int, seconds: float) -> tuple[int, int]:
    """One datagram every `INTERVAL_S` for `seconds`; (sent, distinct echoes received)."""
    echoed: set[bytes] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.setblocking(False)
        started = time.monotonic()
        total = int(seconds / INTERVAL_S)
        for sequence in range(total):
            sock.send(b"%d" % sequence)
            _receive_until(sock, started + (sequence + 1) * INTERVAL_S, echoed)
        late = time.monotonic() + LATE_S
        while len(echoed) < total and time.monotonic() < late:
            _receive_until(sock, late, echoed)
    return total, len(echoed)


def _receive_until(sock: socket.socket, deadline: float, echoed: set[bytes]) -> None:
    """Collect echoes into `echoed` until the monotonic `deadline` (the next send's time)."""
    while (remaining := deadline - time.monotonic()) > 0:
        if not select.select([sock], [], [], remaining)[0]:
            return
        try:
            echoed.add(sock.recv(64))
        except (BlockingIOError, ConnectionRefusedError):
            pass


def main(argv: list[str]) -> None:
    mode, host, port = argv[0], argv[1], int(argv[2])
    if mode == "flood":
        sent, elapsed_s = flood(host, port, int(argv[3]), float(argv[4]))
        print(sent, round(elapsed_s, 3))
    else:
        print(*steady(host, port, float(argv[3])))


if __name__ == "__main__":
    main(sys.argv[1:])
