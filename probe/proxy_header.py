"""Builds the PROXY protocol header (HAProxy's, versions 1 and 2) a client sends first."""

from __future__ import annotations

import ipaddress
import struct

from echostat.probe.address import IPAddress

ECHOED = "the server echoed the PROXY header, so it does not speak the PROXY protocol"
"""Why the first bytes back are the header a client sent first."""


def echoed(header: bytes, data: bytes) -> bool:
    """Whether `data`, the first bytes a connection received, are the PROXY `header` it sent."""
    return bool(header and data) and header.startswith(data[:6])


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY_COMMAND = 0x21
"""Version 2 in the high nibble, the PROXY command in the low one."""
_V2_STREAM = {4: 0x11, 6: 0x21}
"""Per IP version: the family (INET, INET6) in the high nibble, STREAM in the low one."""
_V2_ADDRESSES = {4: struct.Struct("!4s4sHH"), 6: struct.Struct("!16s16sHH")}


def proxy_header(
    version: str, source: tuple[IPAddress, int], destination: tuple[IPAddress, int]
) -> bytes:
    """The header announcing a TCP connection from `source` to `destination` (version "v1"
    or "v2"); both addresses must be of one family, else ValueError."""
    (source_ip, source_port), (destination_ip, destination_port) = source, destination
    if source_ip.version != destination_ip.version:
        raise ValueError(
            f"the PROXY source {source_ip} is IPv{source_ip.version} but the target is "
            f"IPv{destination_ip.version}; use a source of the target's family"
        )
    family = source_ip.version
    if version == "v1":
        line = f"PROXY TCP{family} {source_ip} {destination_ip} {source_port} {destination_port}"
        return f"{line}\r\n".encode("ascii")
    addresses = _V2_ADDRESSES[family].pack(
        source_ip.packed, destination_ip.packed, source_port, destination_port
    )
    fixed = struct.pack("!BBH", _V2_PROXY_COMMAND, _V2_STREAM[family], len(addresses))
    return V2_SIGNATURE + fixed + addresses


def ip_of(host: str) -> IPAddress:
    """`host` as an address (an IPv6 scope id dropped); ValueError if it is a name."""
    return ipaddress.ip_address(host.partition("%")[0])
