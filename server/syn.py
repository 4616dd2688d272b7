"""What arrived of a connection's SYN: Linux's saved SYN headers, decoded.

`decode` turns the bytes of ``getsockopt(IPPROTO_TCP, TCP_SAVED_SYN)`` (the IP header, then the
TCP header with its options, exactly as they arrived) into a frozen `SynHeaders`; it does no
I/O. The IP fields are read from a table of offsets per IP version (RFC 791, RFC 8200), the TCP
options by walking them (RFC 9293). A buffer cut short gives None for what lies beyond its end,
never garbage; no recognisable IP header gives None. `TCP_SAVE_SYN` on a listening socket makes
the kernel keep each SYN until it is read once, on the accepted socket, with `TCP_SAVED_SYN`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TCP_SAVE_SYN = 27
"""Listening socket option (Linux 4.2+): keep the headers of each SYN for its connection."""
TCP_SAVED_SYN = 28
"""Accepted socket option: the kept headers, once; empty when none were kept."""
SAVED_SYN_BYTES = 512
"""Enough for the largest IP header with options (60) and the largest TCP header (60), and
IPv6 extension headers besides."""

OPTION_NAMES = ("mss", "wscale", "sack", "timestamps", "tfo")
"""The TCP options `SynHeaders` names, in the order of its fields (and of the metric's labels)."""

INITIAL_TTLS = (64, 128, 255)
"""The initial TTLs operating systems use: Linux and macOS 64, Windows 128, network gear 255."""

_IPV4_FIELDS = (("tos", 1, "B"), ("flags", 6, "H"), ("ttl", 8, "B"), ("protocol", 9, "B"))
"""(field, byte offset in the IPv4 header, struct format): RFC 791."""
_IPV6_FIELDS = (("tclass", 0, "H"), ("next_header", 6, "B"), ("ttl", 7, "B"))
"""(field, byte offset in the IPv6 header, struct format): RFC 8200; the traffic class sits in
bits 4-11 of the first 16."""

_IPV4_DF = 0x4000
_IPPROTO_TCP = 6
_TCP_HEADER_BYTES = 20
_EXPERIMENTAL_TFO_MAGIC = 0xF989
"""Fast Open before its kind was assigned: experimental kind 254 with this magic (RFC 7413)."""


def _unpackers(fields: tuple[tuple[str, int, str], ...]) -> dict[str, tuple[int, struct.Struct]]:
    return {name: (offset, struct.Struct("!" + code)) for name, offset, code in fields}


_IPV4 = _unpackers(_IPV4_FIELDS)
_IPV6 = _unpackers(_IPV6_FIELDS)


@dataclass(frozen=True, slots=True)
class SynHeaders:
    """A SYN as it reached the server; None where the saved bytes don't say.

    The flags of options are False when the SYN had no such option and None when the saved
    bytes end before the options do.
    """

    ttl: int | None
    """IPv4 time to live, or IPv6 hop limit, as it arrived."""
    dscp: int | None
    """DiffServ code point (0-63)."""
    ecn: int | None
    """ECN field (0-3): 0 not ECN-capable, 1 or 2 ECN-capable, 3 congestion experienced."""
    df: bool | None
    """IPv4 don't-fragment flag; None for IPv6, which routers never fragment."""
    mss: int | None
    """Maximum segment size option, bytes; None without one."""
    wscale: int | None
    """Window scale option (shift count); None without one."""
    sack: bool | None
    """SACK permitted."""
    timestamps: bool | None
    tfo: bool | None
    """TCP Fast Open (kind 34, or the experimental kind 254 with its magic)."""
    other_options: tuple[int, ...] | None
    """Kinds of any other options, in order (NOP and end of list left out)."""

    @property
    def hops(self) -> int | None:
        """Routers passed: the nearest common initial TTL at or above `ttl`, minus `ttl`."""
        if self.ttl is None:
            return None
        return next(initial for initial in INITIAL_TTLS if initial >= self.ttl) - self.ttl

    @property
    def options(self) -> tuple[str, ...]:
        """The names in `OPTION_NAMES` of the options this SYN carried."""
        return tuple(name for name in OPTION_NAMES if getattr(self, name) not in (None, False))


def decode(data: bytes) -> SynHeaders | None:
    """`data`, the bytes of a TCP_SAVED_SYN getsockopt, as `SynHeaders`; None if empty or not
    an IP header."""
    if not data:
        return None
    version = data[0] >> 4
    if version == 4:
        tos, flags, ttl, protocol = _read(data, _IPV4)
        ip_bytes = (data[0] & 0x0F) * 4
        df = None if flags is None else bool(flags & _IPV4_DF)
    elif version == 6:
        tclass_bits, protocol, ttl = _read(data, _IPV6)
        tos = None if tclass_bits is None else (tclass_bits >> 4) & 0xFF
        ip_bytes, df = 40, None
    else:
        return None
    dscp, ecn = (None, None) if tos is None else (tos >> 2, tos & 3)
    # Only a TCP header straight after the IP header is read (no IPv6 extension headers).
    tcp = data[ip_bytes:] if protocol == _IPPROTO_TCP else b""
    return SynHeaders(ttl, dscp, ecn, df, *_options(tcp))


def _read(data: bytes, fields: dict[str, tuple[int, struct.Struct]]) -> list[int | None]:
    """The values of `fields` in `data`, None for those beyond its end."""
    return [
        unpacker.unpack_from(data, offset)[0] if offset + unpacker.size <= len(data) else None
        for offset, unpacker in fields.values()
    ]


_OptionValues = tuple[
    int | None, int | None, bool | None, bool | None, bool | None, tuple[int, ...] | None
]


def _options(tcp: bytes) -> _OptionValues:
    """(mss, wscale, sack, timestamps, tfo, other kinds) from a TCP header; all None unless
    the whole header (options included) is there."""
    if len(tcp) < _TCP_HEADER_BYTES or len(tcp) < (tcp[12] >> 4) * 4:
        return None, None, None, None, None, None
    end = (tcp[12] >> 4) * 4
    mss = wscale = None
    sack = timestamps = tfo = False
    others: list[int] = []
    at = _TCP_HEADER_BYTES
    while at < end:
        kind = tcp[at]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # no-operation: padding
            at += 1
            continue
        length = tcp[at + 1] if at + 1 < end else 0
        if length < 2 or at + length > end:  # malformed: the rest can't be trusted
            break
        if kind == 2 and length == 4:
            mss = int.from_bytes(tcp[at + 2 : at + 4])
        elif kind == 3 and length == 3:
            wscale = tcp[at + 2]
        elif kind == 4:
            sack = True
        elif kind == 8:
            timestamps = True
        elif kind == 34 or (
            kind == 254
            and length >= 4
            and int.from_bytes(tcp[at + 2 : at + 4]) == _EXPERIMENTAL_TFO_MAGIC
        ):
            tfo = True
        else:
            others.append(kind)
        at += length
    return mss, wscale, sack, timestamps, tfo, tuple(others)
