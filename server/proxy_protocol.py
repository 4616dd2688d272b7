"""An incremental parser of the HAProxy PROXY protocol header, versions 1 and 2; no I/O.

A load balancer sends this header first on each connection so that the receiver learns
the real client's address. Use, per connection:

1. `is_trusted(peer_host, networks)`: may this peer send a header at all?
2. `parser = ProxyHeaderParser()`, then `parser.feed(chunk)` for every chunk read, until it
   returns a `ProxyResult` (None means "read more"; bounding the wait is the caller's job).
3. The client is `result.source`, or the real peer when that is None; `result.remainder`
   holds the stream's first bytes, read along with the header, to be echoed like any other.
4. `ProxyProtocolError` means close the connection; its `reason` is a short fact for the
   log line and the rejection counter.

Choices the spec (haproxy doc/proxy-protocol.txt) leaves to the receiver:
- v1 accepts TCP4, TCP6 and UNKNOWN; UNKNOWN means "use the real peer".
- v2 accepts the PROXY command over AF_INET and AF_INET6 with STREAM. LOCAL (a balancer's
  health check), AF_UNSPEC, the UNSPEC transport and AF_UNIX mean "use the real peer", the
  spec's fall-back to UNSPEC; LOCAL and UNSPEC blocks are skipped unread. DGRAM (UDP) is
  rejected: on a TCP listener it can only come from a misconfigured balancer. TLVs are
  skipped after a check that they exactly fill the header; a CRC32C TLV is not verified.
- A v2 header may announce up to 65535 bytes after its 16-byte fixed part; this parser
  rejects more than `V2_MAX_ADDRESS_BYTES` (536, the smallest segment every TCP host must
  accept, which the spec says a whole header fits in), so a connection still sending its
  header holds at most 552 bytes here.
- A header split across reads, down to one byte each, gives the same result or the same
  error as in one read. Each check runs as soon as the bytes it reads have arrived, so a
  client that does not speak the protocol is refused at its first byte that cannot start a
  header, not after a timeout.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from socket import AddressFamily
from typing import NamedTuple

V1_SIGNATURE = b"PROXY "
V1_MAX_HEADER_BYTES = 107
"""The longest v1 line the spec allows, CRLF included."""

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES = 16
"""Signature, version and command, family and transport, then the 2-byte length."""

V2_MAX_ADDRESS_BYTES = 536
"""The largest v2 address-and-TLV block accepted; the spec allows 65535."""

_AddressType = type[IPv4Address] | type[IPv6Address]

_V1_PROTOCOLS = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ")
_V1_FAMILIES: dict[bytes, tuple[AddressFamily, re.Pattern[bytes], _AddressType]] = {
    # Character sets first: ipaddress alone would take IPv6 scope ids ("fe80::1%eth0").
    b"TCP4": (AddressFamily.AF_INET, re.compile(rb"[0-9.]{7,15}"), IPv4Address),
    b"TCP6": (AddressFamily.AF_INET6, re.compile(rb"[0-9A-Fa-f:.]{2,45}"), IPv6Address),
}
_V1_PORT = re.compile(rb"0|[1-9][0-9]*")
_LINE_BREAK = re.compile(rb"[\r\n]")

_V2_COMMAND_LOCAL = 0x0
_V2_COMMAND_PROXY = 0x1
_V2_TRANSPORT_UNSPEC = 0x0
_V2_TRANSPORT_STREAM = 0x1
_V2_FAMILIES: dict[int, tuple[AddressFamily, int]] = {
    0x0: (AddressFamily.AF_UNSPEC, 0),
    0x1: (AddressFamily.AF_INET, 12),
    0x2: (AddressFamily.AF_INET6, 36),
    0x3: (AddressFamily.AF_UNIX, 216),
}
"""Family nibble -> (family, length of its address block)."""

_V2_ADDRESS_FORMATS: dict[AddressFamily, tuple[struct.Struct, _AddressType]] = {
    AddressFamily.AF_INET: (struct.Struct("!4s4sHH"), IPv4Address),
    AddressFamily.AF_INET6: (struct.Struct("!16s16sHH"), IPv6Address),
}
_V2_TLV_HEAD = struct.Struct("!BH")

Network = IPv4Network | IPv6Network


class ProxyProtocolError(Exception):
    """A header that is not a valid PROXY protocol header; the connection must be closed.

    `reason` is a short lowercase fact such as "unsupported v2 command".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Endpoint(NamedTuple):
    """One side of the proxied connection, shaped like a socket's peer name."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """A complete, valid header.

    `source` (the real client) and `destination` (the address the client connected to)
    are None when the header says to use the connection's own endpoints: v1 UNKNOWN, v2
    LOCAL, v2 AF_UNSPEC or UNSPEC transport, and v2 AF_UNIX. `family` is the announced
    family (AF_UNSPEC for v1 UNKNOWN and v2 LOCAL). `remainder` holds the bytes read after
    the header: the start of the client's stream.
    """

    version: int
    family: AddressFamily
    source: Endpoint | None
    destination: Endpoint | None
    remainder: bytes


class ProxyHeaderParser:
    """Accumulates a connection's first bytes until they form a PROXY header or cannot.

    One parser serves one connection, and is spent once `feed` has returned a result or
    raised; feeding it again raises RuntimeError.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._spent = False

    def feed(self, data: bytes) -> ProxyResult | None:
        """Add the next bytes read; None while the header is incomplete.

        Raises ProxyProtocolError as soon as the bytes so far cannot begin a valid header.
        """
        if self._spent:
            raise RuntimeError("the proxy header was already parsed")
        buffer, self._buffer = self._buffer + data, b""
        self._spent = True
        result = _parse(buffer)
        if result is None:
            self._buffer, self._spent = buffer, False
        return result


def is_trusted(peer_host: str, networks: Sequence[Network]) -> bool:
    """Whether a connection's peer address lies in one of the trusted networks.

    An IPv4-mapped IPv6 peer (``::ffff:127.0.0.1``, as a dual-stack socket reports it)
    matches IPv4 networks too. A peer that is not an IP address (a Unix socket) is not
    trusted.
    """
    try:
        address = ip_address(peer_host)
    except ValueError:
        return False
    candidates: list[IPv4Address | IPv6Address] = [address]
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(candidate in network for candidate in candidates for network in networks)


def _parse(buffer: bytes) -> ProxyResult | None:
    """The header at the start of `buffer`, None if more bytes are needed.

    Checks run in the order of the bytes they read, so a header fed in pieces fails the
    same check, with the same reason, as it does in one read.
    """
    signature = V1_SIGNATURE if buffer[:1] == V1_SIGNATURE[:1] else V2_SIGNATURE
    if buffer[: len(signature)] != signature[: len(buffer)]:
        raise ProxyProtocolError("not a proxy protocol header")
    if len(buffer) < len(signature):
        return None
    if signature is V1_SIGNATURE:
        return _parse_v1(buffer)
    return _parse_v2(buffer)


def _parse_v1(buffer: bytes) -> ProxyResult | None:
    """A text header: one line of at most 107 bytes ending in CRLF."""
    window = buffer[:V1_MAX_HEADER_BYTES]
    end = window.find(b"\r\n")
    complete = end >= 0
    # Until the CRLF arrives, a final CR may be its first half.
    line = window[:end] if complete else window.removesuffix(b"\r")
    # The protocol word ends at a stray CR or LF, so "PROXY UNKNOWN\n" is a line-ending fault.
    stray = _LINE_BREAK.search(line)
    rest = line[len(V1_SIGNATURE) : len(line) if stray is None else stray.start()]
    if not any(rest[: len(p)] == p[: len(rest)] for p in _V1_PROTOCOLS):
        raise ProxyProtocolError("unsupported v1 protocol")
    if stray is not None:
        raise ProxyProtocolError("v1 header not terminated by crlf")
    if complete and rest != b"UNKNOWN" and not rest.startswith(_V1_PROTOCOLS):
        raise ProxyProtocolError("unsupported v1 protocol")
    if not complete:
        if len(window) == V1_MAX_HEADER_BYTES:
            raise ProxyProtocolError(f"v1 header longer than {V1_MAX_HEADER_BYTES} bytes")
        return None
    remainder = buffer[end + 2 :]
    fields = line.split(b" ")
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        return ProxyResult(1, AddressFamily.AF_UNSPEC, None, None, remainder)
    if len(fields) != 6:
        raise ProxyProtocolError(f"v1 header has {len(fields)} fields, expected 6")
    family, pattern, address_type = _V1_FAMILIES[protocol]
    source = _v1_endpoint(fields[2], fields[4], pattern, address_type, "source")
    destination = _v1_endpoint(fields[3], fields[5], pattern, address_type, "destination")
    return ProxyResult(1, family, source, destination, remainder)


def _v1_endpoint(
    host: bytes,
    port: bytes,
    pattern: re.Pattern[bytes],
    address_type: _AddressType,
    side: str,
) -> Endpoint:
    """One side's address and port fields, checked against the protocol's family.

    Addresses are returned in canonical form; ports are decimal without leading zeroes.
    """
    invalid_address = f"invalid v1 {side} address"
    if pattern.fullmatch(host) is None:
        raise ProxyProtocolError(invalid_address)
    try:
        address = address_type(host.decode("ascii"))
    except ValueError:
        raise ProxyProtocolError(invalid_address) from None
    if _V1_PORT.fullmatch(port) is None:
        raise ProxyProtocolError(f"invalid v1 {side} port")
    port_number = int(port)
    if port_number > 0xFFFF:
        raise ProxyProtocolError(f"v1 {side} port out of range")
    return Endpoint(str(address), port_number)


def _parse_v2(buffer: bytes) -> ProxyResult | None:
    """A binary header: the 16-byte fixed part, then addresses and TLVs."""
    fixed = buffer[len(V2_SIGNATURE) : V2_FIXED_BYTES]
    if len(fixed) >= 1:
        if fixed[0] >> 4 != 2:
            raise ProxyProtocolError("unsupported v2 version")
        if fixed[0] & 0xF not in (_V2_COMMAND_LOCAL, _V2_COMMAND_PROXY):
            raise ProxyProtocolError("unsupported v2 command")
    if len(fixed) >= 2:
        if fixed[1] >> 4 not in _V2_FAMILIES:
            raise ProxyProtocolError("unsupported v2 address family")
        if fixed[1] & 0xF not in (_V2_TRANSPORT_UNSPEC, _V2_TRANSPORT_STREAM):
            raise ProxyProtocolError("unsupported v2 transport protocol")
    if len(fixed) < 4:
        return None
    is_proxy = fixed[0] & 0xF == _V2_COMMAND_PROXY
    family, address_bytes = _V2_FAMILIES[fixed[1] >> 4]
    # Only a STREAM header of a real family says how its block is laid out; any other
    # block is skipped unread, as the spec asks for LOCAL and UNSPEC.
    is_laid_out = is_proxy and fixed[1] & 0xF == _V2_TRANSPORT_STREAM and address_bytes > 0
    (length,) = struct.unpack_from("!H", fixed, 2)
    if length > V2_MAX_ADDRESS_BYTES:
        raise ProxyProtocolError(
            f"v2 header longer than {V2_FIXED_BYTES + V2_MAX_ADDRESS_BYTES} bytes"
        )
    if is_laid_out and length < address_bytes:
        raise ProxyProtocolError("v2 header too short for its address family")
    end = V2_FIXED_BYTES + length
    if len(buffer) < end:
        return None
    remainder = buffer[end:]
    if not is_proxy:
        return ProxyResult(2, AddressFamily.AF_UNSPEC, None, None, remainder)
    if not is_laid_out:
        return ProxyResult(2, family, None, None, remainder)
    block = buffer[V2_FIXED_BYTES:end]
    _check_tlvs(block, address_bytes)
    address_format = _V2_ADDRESS_FORMATS.get(family)
    if address_format is None:
        return ProxyResult(2, family, None, None, remainder)
    layout, address_type = address_format
    source, destination, source_port, destination_port = layout.unpack_from(block)
    return ProxyResult(
        2,
        family,
        Endpoint(str(address_type(source)), source_port),
        Endpoint(str(address_type(destination)), destination_port),
        remainder,
    )


def _check_tlvs(block: bytes, offset: int) -> None:
    """Checks that the TLVs after the addresses fill the rest of the block exactly."""
    while offset < len(block):
        if len(block) - offset < _V2_TLV_HEAD.size:
            raise ProxyProtocolError("truncated v2 tlv")
        _, value_bytes = _V2_TLV_HEAD.unpack_from(block, offset)
        offset += _V2_TLV_HEAD.size + value_bytes
    if offset > len(block):
        raise ProxyProtocolError("truncated v2 tlv")
