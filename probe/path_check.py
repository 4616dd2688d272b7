"""``echostat probe --path``: one connection (or report request) whose two views, the probe's
and the server's, are put side by side before the usual check runs."""

from __future__ import annotations

import asyncio
import socket
import struct

from echostat.probe.marks import Marks, Sent, sent_by
from echostat.probe.path_view import PathView, compare
from echostat.probe.server_report import (
    ServerView,
    parse_report,
    read_report,
    readable,
    udp_request,
)
from echostat.probe.session import Endpoint, new_socket, resolve, send_preamble

UDP_TRIES = 3
"""Report requests sent before a UDP listener counts as not reporting (datagrams get lost)."""

_IP_RECVTOS = 13
"""Linux's IP_RECVTOS, which Python's socket module does not name."""

ECT_0 = 2
"""ECN-capable transport (0): the report request carries it, so a path that clears the ECN
field shows (a TCP SYN never is ECN-capable, RFC 3168)."""


def report_wait_s(connect_s: float, timeout_s: float) -> float:
    """How long to wait for a report the server would send at once: a few round trips, at
    least a second, at most the probe's --timeout."""
    return min(timeout_s, max(1.0, 4 * connect_s))


async def tcp_path(endpoint: Endpoint, timeout_s: float) -> tuple[Sent, PathView]:
    """Open one connection with the probe's marks, read the server's report (sending the PROXY
    header first, if any) and compare. Raises OSError or TimeoutError if it cannot connect,
    ValueError if the server sends something that is not a report."""
    loop = asyncio.get_running_loop()
    family, address = await resolve(endpoint)
    sock = new_socket(endpoint, family)
    try:
        started = loop.time()
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout_s)
        sent = sent_by(sock)
        await send_preamble(endpoint, sock)
        wait_s = report_wait_s(loop.time() - started, timeout_s)
        seen = await read_report(sock, wait_s, endpoint.preamble)
    finally:
        sock.close()
    return sent, compare(sent, seen)


async def udp_path(
    host: str, port: int, marks: Marks, source: str | None, timeout_s: float
) -> tuple[Sent, PathView]:
    """Ask a UDP listener for its view of a request datagram sent with the probe's marks, and
    read the code point its answer arrives back with. Raises OSError if the kernel reports an
    error (port unreachable)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        marks.apply(sock)
        if family == socket.AF_INET6:
            level, tos, receive_tos = (
                socket.IPPROTO_IPV6,
                socket.IPV6_TCLASS,
                socket.IPV6_RECVTCLASS,
            )
        else:
            level, tos, receive_tos = socket.IPPROTO_IP, socket.IP_TOS, _IP_RECVTOS
        sock.setsockopt(level, tos, sock.getsockopt(level, tos) | ECT_0)
        sock.setsockopt(level, receive_tos, 1)
        if source is not None:
            sock.bind((source, 0))
        sock.connect(address)
        answer = await _ask(loop, sock, timeout_s / UDP_TRIES)
        sent = sent_by(sock)
    finally:
        sock.close()
    if answer is None:
        return sent, compare(sent, None)
    seen, return_dscp = answer
    return sent, compare(sent, seen, return_dscp)


async def _ask(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, wait_s: float
) -> tuple[ServerView, int | None] | None:
    """Send the request up to `UDP_TRIES` times; the first report back, or None."""
    for _ in range(UDP_TRIES):
        sock.send(udp_request())
        deadline = loop.time() + wait_s
        while (left := deadline - loop.time()) > 0:
            try:
                await asyncio.wait_for(readable(sock), left)
            except TimeoutError:
                break
            data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(4))
            try:
                return parse_report(data), _tos_of(ancillary)
            except ValueError:
                return None  # the request echoed back: a listener without reports
    return None


def _tos_of(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The DSCP of a received datagram, from its IP_TOS or IPV6_TCLASS control message."""
    for level, kind, data in ancillary:
        if (level, kind) == (socket.IPPROTO_IP, socket.IP_TOS) and data:
            return data[0] >> 2
        if (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_TCLASS) and len(data) >= 4:
            return int(struct.unpack("=i", data[:4])[0]) >> 2
    return None
