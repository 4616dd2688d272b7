"""UDP path reports: a report request is answered with what arrived of it, never amplified.

On a UDP listener with ``report: true`` a datagram that starts with ``ECHOSTAT-REPORT?`` and is
at least `MIN_REQUEST_BYTES` long is answered with one datagram ``ECHOSTAT-REPORT <json>\\r\\n``,
no longer than the request: its source as seen, the address it reached, and its TTL (hop
limit), DSCP and ECN, read from the ancillary data of ``recvmsg``. The answer leaves with the
DSCP the request arrived with, so the client sees what the return path does to a marking.
Every other datagram is echoed as on any UDP listener, within the same bounds: the echo
protocol decides whether to answer at all, and `ReportingTransport` only changes what an
answer to a request holds. Listeners without the option keep the asyncio endpoint's
``recvfrom`` path and never set these socket options.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from echostat.server.report import address_name, report_line

log = logging.getLogger(__name__)

REQUEST_PREFIX = b"ECHOSTAT-REPORT?"
MIN_REQUEST_BYTES = 512
"""A request this long can carry any report, so an answer is never larger than its request."""

_MAX_DATAGRAM_BYTES = 65535
_READS_PER_WAKEUP = 64
"""Datagrams read per readiness event, so one busy listener can't starve the loop."""

# Linux's numbers, where Python's socket module lacks the name.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
_IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
_IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)
_INT = struct.Struct("=i")
_ANCILLARY_BYTES = socket.CMSG_SPACE(20) * 3
"""Room for the three messages asked for: packet info (at most 20 bytes), TTL and TOS."""


def enable_ancillary(sock: socket.socket) -> None:
    """Have `sock`'s kernel attach each datagram's TTL, TOS and destination to `recvmsg`."""
    if sock.family == socket.AF_INET6:
        options = (_IPV6_RECVHOPLIMIT, _IPV6_RECVTCLASS, _IPV6_RECVPKTINFO)
        level = socket.IPPROTO_IPV6
    else:
        options, level = (_IP_RECVTTL, _IP_RECVTOS, _IP_PKTINFO), socket.IPPROTO_IP
    for option in options:
        sock.setsockopt(level, option, 1)


def is_request(data: bytes) -> bool:
    return len(data) >= MIN_REQUEST_BYTES and data.startswith(REQUEST_PREFIX)


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> tuple[int | None, int | None, str | None]:
    """(TTL or hop limit, TOS or traffic class, destination address) of one datagram."""
    ttl = tos = local = None
    for level, kind, data in ancillary:
        if level == socket.IPPROTO_IP and kind == socket.IP_TTL and len(data) >= 4:
            ttl = _INT.unpack_from(data)[0]
        elif level == socket.IPPROTO_IP and kind == socket.IP_TOS and data:
            tos = data[0]
        elif level == socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 12:
            local = socket.inet_ntop(socket.AF_INET, data[8:12])  # in_pktinfo.ipi_addr
        elif level == socket.IPPROTO_IPV6 and kind == _IPV6_HOPLIMIT and len(data) >= 4:
            ttl = _INT.unpack_from(data)[0]
        elif level == socket.IPPROTO_IPV6 and kind == _IPV6_TCLASS and len(data) >= 4:
            tos = _INT.unpack_from(data)[0]
        elif level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(data) >= 16:
            local = socket.inet_ntop(socket.AF_INET6, data[:16])  # in6_pktinfo.ipi6_addr
    return ttl, tos, local


class ReportingTransport(asyncio.DatagramTransport):
    """A datagram transport over `recvmsg` that answers report requests with a report.

    It reads `sock` with the loop's reader callbacks and hands each datagram to `protocol`;
    when the protocol echoes the datagram it is handling and that datagram is a report
    request, the report goes out instead, with the request's DSCP, and `on_shorter` learns
    by how many bytes the answer was shorter. `close` stops reading and closes the socket.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
        on_shorter: Callable[[Any, int], None],
    ) -> None:
        super().__init__({"socket": sock, "sockname": sock.getsockname()})
        self._on_shorter = on_shorter
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._port = sock.getsockname()[1]
        self._handling: tuple[bytes, list[tuple[int, int, bytes]]] | None = None
        """The datagram being handed to the protocol, with its ancillary data."""
        self._closing = False
        enable_ancillary(sock)
        protocol.connection_made(self)
        loop.add_reader(sock.fileno(), self._read)

    def sendto(self, data: Any, addr: Any = None) -> None:
        handling = self._handling
        if handling is not None and data is handling[0] and is_request(data):
            self._send_report(data, addr, handling[1])
            return
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:  # a full send buffer, or the source is unreachable: UDP drops
            log.debug("udp report listener: cannot send to %s: %s", addr, exc)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, None)

    def _read(self) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, ancillary, _, addr = self._sock.recvmsg(_MAX_DATAGRAM_BYTES, _ANCILLARY_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error for an earlier answer
                self._protocol.error_received(exc)
                continue
            self._handling = (data, ancillary)
            try:
                self._protocol.datagram_received(data, addr)
            finally:
                self._handling = None

    def _send_report(
        self, request: bytes, addr: Any, ancillary: list[tuple[int, int, bytes]]
    ) -> None:
        """Answer `request` with its report, marked with the DSCP it arrived with."""
        ttl, tos, local = _arrival(ancillary)
        answer = report_line(
            {
                "peer": address_name(addr),
                "local": address_name((local, self._port)) if local else None,
                "ttl": ttl,
                "dscp": None if tos is None else tos >> 2,
                "ecn": None if tos is None else tos & 3,
            }
        )
        if len(answer) > len(request):  # cannot happen at MIN_REQUEST_BYTES; never amplify
            return
        marks = []
        if tos is not None:
            level, kind = (
                (socket.IPPROTO_IPV6, _IPV6_TCLASS)
                if self._sock.family == socket.AF_INET6
                else (socket.IPPROTO_IP, socket.IP_TOS)
            )
            marks.append((level, kind, _INT.pack(tos & 0xFC)))
        try:
            self._sock.sendmsg([answer], marks, 0, addr)
        except OSError as exc:
            log.debug("udp report listener: cannot answer %s: %s", addr, exc)
            return
        self._on_shorter(addr, len(request) - len(answer))
