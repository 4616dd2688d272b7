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

BUFFER_BYTES = _WHOLE.size
"""How much to ask the kernel for: up to the last field decoded (older kernels give less)."""

_EACH = tuple((name, offset, struct.Struct("=" + code)) for name, offset, code in _FIELDS)

_LISTEN_QUEUE = struct.Struct("=24xI")
"""A listening socket's tcpi_unacked, which Linux fills with its accept queue's length."""

LISTEN_QUEUE_BYTES = _LISTEN_QUEUE.size
"""How much of a listening socket's TCP_INFO to ask for: up to its accept queue's length."""


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


_ADVMSS = (84, struct.Struct("=I"))
"""tcpi_advmss: the MSS this end advertised (less the timestamps option's 12 bytes if used)."""

ADVMSS_BUFFER_BYTES = _ADVMSS[0] + _ADVMSS[1].size
"""How much to ask the kernel for to read `advertised_mss`."""


def advertised_mss(data: bytes) -> int | None:
    """The MSS this end advertised, from the bytes of a TCP_INFO getsockopt; None if short."""
    offset, unpacker = _ADVMSS
    return unpacker.unpack_from(data, offset)[0] if len(data) >= offset + unpacker.size else None


def decode(data: bytes) -> TcpInfo:
    """`data`, the bytes of a TCP_INFO getsockopt, as a `TcpInfo`."""
    if len(data) >= _WHOLE.size:
        return _from_kernel(*_WHOLE.unpack_from(data))
    return _from_kernel(
        *(
            unpacker.unpack_from(data, offset)[0] if offset + unpacker.size <= len(data) else None
            for _, offset, unpacker in _EACH
        )
    )


def accept_queue(data: bytes) -> int | None:
    """How many connections wait to be accepted, from a listening socket's TCP_INFO `data`
    (what ``ss -l`` shows as Recv-Q); None if the kernel returned too little."""
    return _LISTEN_QUEUE.unpack_from(data)[0] if len(data) >= LISTEN_QUEUE_BYTES else None


def _from_kernel(
    unacked: int | None,
    lost: int | None,
    rtt_us: int | None,
    rttvar_us: int | None,
    cwnd: int | None,
    retransmits: int | None,
    min_rtt_us: int | None,
    delivery_rate: int | None,
) -> TcpInfo:
    """The kernel's values, in the order of `_FIELDS`, in the API's units."""
    return TcpInfo(
        rtt_ms=None if rtt_us is None else rtt_us / 1000,
        rttvar_ms=None if rttvar_us is None else rttvar_us / 1000,
        min_rtt_ms=None if min_rtt_us is None or min_rtt_us == _UNKNOWN_U32 else min_rtt_us / 1000,
        retransmits=retransmits,
        lost=lost,
        cwnd=cwnd,
        delivery_rate_bps=None if delivery_rate is None else delivery_rate * 8,
        unacked=unacked,
    )
