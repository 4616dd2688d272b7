"""What the kernel knows about one TCP connection: Linux's ``struct tcp_info``, decoded.

`decode` turns the bytes of ``getsockopt(IPPROTO_TCP, TCP_INFO)`` into a frozen `TcpInfo`; it
does no I/O. Fields are read from a table of offsets into the structure, as in
``include/uapi/linux/tcp.h`` (the way iproute2's ``ss`` and Envoy's ``tcp_stats`` read it).
Older kernels return a shorter structure: a field that lies beyond its end is None, never
garbage. `TCP_INFO` is None on platforms without the option, where callers get no `TcpInfo`.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
"""The socket option number, or None where the platform has no TCP_INFO."""

BUFFER_BYTES = 256
"""How much to ask the kernel for: more than every field below needs (it returns less)."""

_UNKNOWN_U32 = 0xFFFFFFFF
"""What the kernel reports as min_rtt before it has a sample (``~0U``)."""

_FIELDS: tuple[tuple[str, int, str], ...] = (
    # (field, byte offset in struct tcp_info, struct format), in order of offset
    ("unacked", 24, "I"),  # tcpi_unacked: segments sent, not yet acknowledged
    ("lost", 32, "I"),  # tcpi_lost: segments the kernel thinks are lost
    ("rtt_us", 68, "I"),  # tcpi_rtt: smoothed round-trip time, µs
    ("rttvar_us", 72, "I"),  # tcpi_rttvar: its mean deviation, µs
    ("cwnd", 80, "I"),  # tcpi_snd_cwnd: congestion window, segments
    ("retransmits", 100, "I"),  # tcpi_total_retrans: retransmitted segments, lifetime
    ("min_rtt_us", 148, "I"),  # tcpi_min_rtt (Linux 4.6+), µs
    ("delivery_rate", 160, "Q"),  # tcpi_delivery_rate (Linux 4.9+), bytes/s
)


def _layout(fields: tuple[tuple[str, int, str], ...]) -> struct.Struct:
    """One native-endian struct that skips the bytes between the fields of `fields`."""
    layout, position = "=", 0
    for _, offset, code in fields:
        layout += f"{offset - position}x{code}" if offset > position else code
        position = offset + struct.calcsize("=" + code)
    return struct.Struct(layout)


_WHOLE = _layout(_FIELDS)
"""Decodes every field at once when the kernel returned all of them."""

_EACH = tuple((name, offset, struct.Struct("=" + code)) for name, offset, code in _FIELDS)


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The path as the server's kernel sees it; None where the running kernel doesn't say."""

    rtt_ms: float | None
    """Smoothed round-trip time."""
    rttvar_ms: float | None
    """How much the round-trip time varies (mean deviation)."""
    min_rtt_ms: float | None
    """The lowest round-trip time seen on this connection."""
    retransmits: int | None
    """Segments sent again since the connection opened."""
    lost: int | None
    """Segments currently presumed lost."""
    cwnd: int | None
    """Congestion window: segments the server may have in flight."""
    delivery_rate_bps: int | None
    """Recent delivery rate to the client, in bits per second."""
    unacked: int | None
    """Segments sent and not yet acknowledged."""


def decode(data: bytes) -> TcpInfo:
    """`data`, the bytes of a TCP_INFO getsockopt, as a `TcpInfo`."""
    if len(data) >= _WHOLE.size:
        raw = dict(zip((name for name, _, _ in _FIELDS), _WHOLE.unpack_from(data), strict=True))
    else:
        raw = {
            name: unpacker.unpack_from(data, offset)[0]
            for name, offset, unpacker in _EACH
            if offset + unpacker.size <= len(data)
        }
    min_rtt = raw.get("min_rtt_us")
    delivery_rate = raw.get("delivery_rate")
    return TcpInfo(
        rtt_ms=_ms(raw.get("rtt_us")),
        rttvar_ms=_ms(raw.get("rttvar_us")),
        min_rtt_ms=None if min_rtt == _UNKNOWN_U32 else _ms(min_rtt),
        retransmits=raw.get("retransmits"),
        lost=raw.get("lost"),
        cwnd=raw.get("cwnd"),
        delivery_rate_bps=None if delivery_rate is None else delivery_rate * 8,
        unacked=raw.get("unacked"),
    )


def _ms(microseconds: int | None) -> float | None:
    return None if microseconds is None else microseconds / 1000
