"""What the probe puts on its own packets (``--dscp``, ``--ttl``, ``--mss``), and what it reads
back from its own socket of what it sent: the "sent" half of ``echostat probe --path``.

Marks are set on the socket before it connects, so the SYN carries them. What was sent is read
from the kernel after the connect: the local address and port, the TOS or traffic class, the
TTL or hop limit, and the MSS advertised in the SYN (``tcpi_advmss`` of ``TCP_INFO``). The TCP
options a Linux SYN carries follow the namespace's sysctls, which is where they are read.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echostat.probe.address import is_decimal

DSCP_NAMES: dict[str, int] = {
    "EF": 46,
    **{f"AF{klass}{drop}": 8 * klass + 2 * drop for klass in range(1, 5) for drop in range(1, 4)},
    **{f"CS{klass}": 8 * klass for klass in range(8)},
}
"""The per-hop behaviours' names (RFC 2474, 2597, 3246) and their code points."""

_DSCP_BY_VALUE = {value: name for name, value in DSCP_NAMES.items() if name != "CS0"}

TCP_OPTION_SYSCTLS = (
    ("wscale", "tcp_window_scaling"),
    ("sack", "tcp_sack"),
    ("timestamps", "tcp_timestamps"),
)
"""The SYN options Linux adds when its sysctl (under /proc/sys/net/ipv4/) is on; MSS always."""

_ADVMSS = struct.Struct("=I")
_ADVMSS_OFFSET = 84
"""``tcpi_advmss`` in ``struct tcp_info`` (include/uapi/linux/tcp.h): the MSS the SYN carried,
less the timestamp option's 12 bytes once timestamps were agreed (tcp_input.c lowers it then)."""
_OPTIONS_OFFSET = 5
_TCPI_OPT_TIMESTAMPS = 1
_TIMESTAMP_OPTION_BYTES = 12


def parse_dscp(text: str) -> int:
    """``--dscp``'s value: 0..63, or a name such as ``EF``, ``AF11`` or ``CS1``."""
    name = text.strip().upper()
    if name in DSCP_NAMES:
        return DSCP_NAMES[name]
    if is_decimal(name) and 0 <= int(name) <= 63:
        return int(name)
    raise ValueError(f"--dscp: expected 0..63 or a name (EF, AF11..AF43, CS0..CS7), got {text!r}")


def dscp_label(value: int | None) -> str:
    """A code point as printed: ``46 (EF)``, ``10 (AF11)``, ``0``; ``-`` when unknown."""
    if value is None:
        return "-"
    name = _DSCP_BY_VALUE.get(value)
    return f"{value} ({name})" if name else str(value)


@dataclass(frozen=True)
class Marks:
    """Header fields the probe sets on every socket it opens; None leaves the kernel's own."""

    dscp: int | None = None
    ttl: int | None = None
    mss: int | None = None

    def apply(self, sock: Any) -> None:
        """Set the marks on `sock` (a socket, or asyncio's `TransportSocket` of one) before it
        connects or sends anything."""
        v6 = sock.family == socket.AF_INET6
        if self.dscp is not None:
            level, name = (
                (socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
                if v6
                else (socket.IPPROTO_IP, socket.IP_TOS)
            )
            sock.setsockopt(level, name, self.dscp << 2)
        if self.ttl is not None:
            level, name = (
                (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
                if v6
                else (socket.IPPROTO_IP, socket.IP_TTL)
            )
            sock.setsockopt(level, name, self.ttl)
        if self.mss is not None and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, self.mss)


NO_MARKS = Marks()
"""The kernel's own header fields."""


@dataclass(frozen=True)
class Sent:
    """What the probe's side of one connection (or datagram socket) sent, read from the kernel."""

    local_host: str
    local_port: int
    dscp: int
    ecn: int
    ttl: int
    mss: int | None
    """The MSS its SYN advertised; None for UDP."""
    options: tuple[str, ...] | None
    """The TCP options its SYN carried (``mss``, ``wscale``, ``sack``, ``timestamps``)."""


def sent_by(sock: socket.socket) -> Sent:
    """What `sock` (connected, or a UDP socket that has sent) put on the wire."""
    host, port = sock.getsockname()[:2]
    v6 = sock.family == socket.AF_INET6
    if v6:
        tos = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
        ttl = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS)
        if ttl < 0:  # the route's default, which the kernel reports as -1
            ttl = int(Path("/proc/sys/net/ipv6/conf/default/hop_limit").read_text())
    else:
        tos = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
        ttl = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
    mss: int | None = None
    options: tuple[str, ...] | None = None
    if sock.type == socket.SOCK_STREAM:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _ADVMSS_OFFSET + 4)
        if len(info) >= _ADVMSS_OFFSET + 4:
            mss = _ADVMSS.unpack_from(info, _ADVMSS_OFFSET)[0]
            if info[_OPTIONS_OFFSET] & _TCPI_OPT_TIMESTAMPS:
                mss += _TIMESTAMP_OPTION_BYTES
        options = ("mss", *syn_options_enabled())
    return Sent(unmapped(str(host)), int(port), tos >> 2, tos & 3, ttl, mss, options)


def syn_options_enabled() -> tuple[str, ...]:
    """The options besides MSS that this network namespace's kernel puts in a SYN."""
    enabled = []
    for option, sysctl in TCP_OPTION_SYSCTLS:
        try:
            on = Path("/proc/sys/net/ipv4", sysctl).read_text().strip() != "0"
        except OSError:
            on = True  # Linux's default for all three
        if on:
            enabled.append(option)
    return tuple(enabled)


def unmapped(host: str) -> str:
    """An IPv4-mapped IPv6 address (``::ffff:198.18.0.2``) as the IPv4 address it maps."""
    return host.removeprefix("::ffff:") if host.startswith("::ffff:") and "." in host else host
