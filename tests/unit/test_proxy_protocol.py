"""The PROXY protocol parser: valid and malformed headers, split reads, trusted peers."""

from __future__ import annotations

import dataclasses
import itertools
import struct
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_network
from socket import AddressFamily
from typing import NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echostat.server.proxy_protocol import (
    V2_SIGNATURE,
    Endpoint,
    ProxyHeaderParser,
    ProxyProtocolError,
    ProxyResult,
    is_trusted,
)

INET, INET6, UNIX, UNSPEC = (
    AddressFamily.AF_INET,
    AddressFamily.AF_INET6,
    AddressFamily.AF_UNIX,
    AddressFamily.AF_UNSPEC,
)
PAYLOAD = b"hello\r\nPROXY TCP4 10.9.9.9 10.9.9.9 1 1\r\n\x00"
"""Stream bytes after a header, made to look like another header: they must pass untouched."""

property_settings = settings(deadline=None, database=None)
"""The machine is shared and noisy, so no per-example deadline; no example files left behind."""


def v2_header(command: int, family: int, block: bytes = b"", *, version: int = 2) -> bytes:
    """A v2 header: `family` is the 14th byte (family and transport nibbles)."""
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(block))


def v2_proxy(family: int, block: bytes) -> bytes:
    """A v2 PROXY command header with its block."""
    return v2_header(0x1, family, block) + block


def inet_block(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    """The address block of a v2 AF_INET or AF_INET6 header."""
    address_type = IPv4Address if ":" not in source else IPv6Address
    return (
        address_type(source).packed
        + address_type(destination).packed
        + struct.pack("!HH", source_port, destination_port)
    )


def tlv(kind: int, value: bytes) -> bytes:
    """One v2 type-length-value record."""
    return struct.pack("!BH", kind, len(value)) + value


def result(
    version: int,
    family: AddressFamily,
    source: tuple[str, int] | None = None,
    destination: tuple[str, int] | None = None,
    remainder: bytes = b"",
) -> ProxyResult:
    """The expected result, endpoints given as plain tuples."""
    return ProxyResult(
        version,
        family,
        None if source is None else Endpoint(*source),
        None if destination is None else Endpoint(*destination),
        remainder,
    )


def feed_in_chunks(data: bytes, cuts: Sequence[int]) -> ProxyResult | None:
    """Feeds `data` split at `cuts`; chunks after the result join its remainder, as a caller
    would echo them."""
    parser = ProxyHeaderParser()
    for start, end in itertools.pairwise([0, *sorted(cuts), len(data)]):
        parsed = parser.feed(data[start:end])
        if parsed is not None:
            return dataclasses.replace(parsed, remainder=parsed.remainder + data[end:])
    return None


def outcome(data: bytes, cuts: Sequence[int]) -> ProxyResult | str | None:
    """The result, the error reason, or None (incomplete) for `data` split at `cuts`."""
    try:
        return feed_in_chunks(data, cuts)
    except ProxyProtocolError as error:
        return error.reason


def error_reason(data: bytes) -> str:
    """The reason a parser gives for `data` fed in one read."""
    with pytest.raises(ProxyProtocolError) as raised:
        ProxyHeaderParser().feed(data)
    return raised.value.reason


class Case(NamedTuple):
    """A valid header and what it parses to, remainder aside."""

    header: bytes
    expected: ProxyResult


IPV6_MAX = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
VALID_CASES = {
    "v1-tcp4": Case(
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        result(1, INET, ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    ),
    "v1-tcp4-port-zero": Case(
        b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
        result(1, INET, ("0.0.0.0", 0), ("255.255.255.255", 65535)),
    ),
    "v1-tcp6-longest": Case(
        f"PROXY TCP6 {IPV6_MAX} {IPV6_MAX} 65535 65535\r\n".encode(),
        result(1, INET6, (IPV6_MAX, 65535), (IPV6_MAX, 65535)),
    ),
    "v1-tcp6-uppercase-to-canonical": Case(
        b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1 2\r\n",
        result(1, INET6, ("2001:db8::1", 1), ("::1", 2)),
    ),
    "v1-unknown-short": Case(b"PROXY UNKNOWN\r\n", result(1, UNSPEC)),
    "v1-unknown-longest": Case(
        f"PROXY UNKNOWN {IPV6_MAX} {IPV6_MAX} 65535 65535\r\n".encode(), result(1, UNSPEC)
    ),
    "v2-inet": Case(
        v2_proxy(0x11, inet_block("127.0.0.1", "127.0.0.2", 40000, 7008)),
        result(2, INET, ("127.0.0.1", 40000), ("127.0.0.2", 7008)),
    ),
    "v2-inet6": Case(
        v2_proxy(0x21, inet_block("2001:db8::7", "::1", 1, 65535)),
        result(2, INET6, ("2001:db8::7", 1), ("::1", 65535)),
    ),
    "v2-inet-tlvs": Case(
        v2_proxy(
            0x11,
            inet_block("10.0.0.1", "10.0.0.2", 5, 6)
            + tlv(0x01, b"h2")
            + tlv(0x02, b"echo.example")
            + tlv(0x04, b""),
        ),
        result(2, INET, ("10.0.0.1", 5), ("10.0.0.2", 6)),
    ),
    "v2-inet-largest": Case(
        v2_proxy(0x11, inet_block("10.0.0.1", "10.0.0.2", 5, 6) + tlv(0x04, bytes(521))),
        result(2, INET, ("10.0.0.1", 5), ("10.0.0.2", 6)),
    ),
    "v2-local": Case(v2_header(0x0, 0x00), result(2, UNSPEC)),
    "v2-local-with-block-skipped": Case(
        v2_header(0x0, 0x11, b"\xff" * 5) + b"\xff" * 5, result(2, UNSPEC)
    ),
    "v2-unspec-family": Case(v2_proxy(0x01, b"\xff" * 7), result(2, UNSPEC)),
    "v2-unspec-transport": Case(v2_proxy(0x10, b"\xff" * 3), result(2, INET)),
    "v2-unix": Case(v2_proxy(0x31, b"/run/a".ljust(108, b"\0") * 2), result(2, UNIX)),
}

MALFORMED_CASES = {
    "http-request": (b"GET / HTTP/1.1\r\n\r\n", "not a proxy protocol header"),
    "tls-hello": (b"\x16\x03\x01\x02\x00\x01", "not a proxy protocol header"),
    "v1-signature-typo": (b"PROXZ TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "not a proxy protocol header"),
    "v1-no-space": (b"PROXY\r\n", "not a proxy protocol header"),
    "v2-signature-typo": (V2_SIGNATURE[:-2] + b"X\n!\x11\x00\x00", "not a proxy protocol header"),
    "v1-udp4": (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "unsupported v1 protocol"),
    "v1-lowercase": (b"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", "unsupported v1 protocol"),
    "v1-protocol-only": (b"PROXY TCP4\r\n", "unsupported v1 protocol"),
    "v1-unknown-suffix": (b"PROXY UNKNOWNX\r\n", "unsupported v1 protocol"),
    "v1-five-fields": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "v1 header has 5 fields, expected 6"),
    "v1-seven-fields": (
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
        "v1 header has 7 fields, expected 6",
    ),
    "v1-double-space": (
        b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
        "v1 header has 7 fields, expected 6",
    ),
    "v1-octet-too-big": (b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "invalid v1 source address"),
    "v1-octet-leading-zero": (b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "invalid v1 source address"),
    "v1-tcp4-with-ipv6": (b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "invalid v1 source address"),
    "v1-tcp6-with-ipv4": (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "invalid v1 destination address"),
    "v1-tcp6-scope-id": (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid v1 source address"),
    "v1-hostname": (b"PROXY TCP4 1.2.3.4 localhost 1 2\r\n", "invalid v1 destination address"),
    "v1-port-65536": (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "v1 source port out of range"),
    "v1-port-huge": (
        b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999999999\r\n",
        "v1 destination port out of range",
    ),
    "v1-port-leading-zero": (b"PROXY TCP4 1.2.3.4 1.2.3.4 080 2\r\n", "invalid v1 source port"),
    "v1-port-signed": (b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", "invalid v1 source port"),
    "v1-port-negative": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 -2\r\n", "invalid v1 destination port"),
    "v1-lf-only": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\nGET", "v1 header not terminated by crlf"),
    "v1-cr-only": (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rGET", "v1 header not terminated by crlf"),
    "v1-lf-cr": (b"PROXY UNKNOWN\n\r", "v1 header not terminated by crlf"),
    "v1-no-crlf-in-107-bytes": (
        b"PROXY UNKNOWN " + b"f" * 93 + b"\r\n",
        "v1 header longer than 107 bytes",
    ),
    "v2-version-1": (v2_header(0x1, 0x11, version=1), "unsupported v2 version"),
    "v2-version-3": (v2_header(0x1, 0x11, version=3), "unsupported v2 version"),
    "v2-command-2": (v2_header(0x2, 0x11), "unsupported v2 command"),
    "v2-command-15": (v2_header(0xF, 0x11), "unsupported v2 command"),
    "v2-family-4": (v2_header(0x1, 0x41), "unsupported v2 address family"),
    "v2-local-family-15": (v2_header(0x0, 0xF0), "unsupported v2 address family"),
    "v2-dgram": (v2_header(0x1, 0x12), "unsupported v2 transport protocol"),
    "v2-transport-3": (v2_header(0x1, 0x13), "unsupported v2 transport protocol"),
    "v2-too-long": (v2_header(0x0, 0x00, bytes(537)), "v2 header longer than 552 bytes"),
    "v2-inet-short": (v2_proxy(0x11, bytes(11)), "v2 header too short for its address family"),
    "v2-inet6-short": (v2_proxy(0x21, bytes(35)), "v2 header too short for its address family"),
    "v2-unix-short": (v2_proxy(0x31, bytes(215)), "v2 header too short for its address family"),
    "v2-tlv-head-cut": (v2_proxy(0x11, bytes(12) + b"\x04\x00"), "truncated v2 tlv"),
    "v2-tlv-value-cut": (v2_proxy(0x11, bytes(12) + b"\x04\x00\x05abcd"), "truncated v2 tlv"),
}

EARLY_REJECTIONS = {
    "first byte": b"G",
    "v1 signature": b"PROXI",
    "v1 protocol": b"PROXY TCP5",
    "v1 stray lf": b"PROXY TCP4 1.2.3.4\n",
    "v1 length": b"PROXY UNKNOWN " + b"f" * 93,
    "v2 signature": V2_SIGNATURE[:5] + b"\x01",
    "v2 version": V2_SIGNATURE + b"\x11",
    "v2 family": V2_SIGNATURE + b"\x21\x51",
    "v2 length": V2_SIGNATURE + b"\x21\x11\x02\x19",
    "v2 length for family": V2_SIGNATURE + b"\x21\x21\x00\x10",
}


@pytest.mark.parametrize("case", VALID_CASES.values(), ids=VALID_CASES.keys())
def test_valid_header_parses_in_one_read(case: Case) -> None:
    """A whole header and the stream after it in one read give the header's result."""
    parsed = ProxyHeaderParser().feed(case.header + PAYLOAD)
    assert parsed == dataclasses.replace(case.expected, remainder=PAYLOAD)


@pytest.mark.parametrize("case", VALID_CASES.values(), ids=VALID_CASES.keys())
def test_valid_header_parses_one_byte_at_a_time(case: Case) -> None:
    """Fed byte by byte, a header asks for more until its last byte, then gives its result."""
    parser = ProxyHeaderParser()
    for byte in case.header[:-1]:
        assert parser.feed(bytes([byte])) is None
    assert parser.feed(case.header[-1:]) == case.expected


@pytest.mark.parametrize(("data", "reason"), MALFORMED_CASES.values(), ids=MALFORMED_CASES.keys())
def test_malformed_header_is_rejected_with_its_reason(data: bytes, reason: str) -> None:
    """A malformed header raises ProxyProtocolError naming what is wrong."""
    assert error_reason(data) == reason


@pytest.mark.parametrize(("data", "reason"), MALFORMED_CASES.values(), ids=MALFORMED_CASES.keys())
def test_malformed_header_is_rejected_alike_one_byte_at_a_time(data: bytes, reason: str) -> None:
    """Fed byte by byte, a malformed header fails with the same reason as in one read."""
    assert outcome(data, range(1, len(data))) == reason


@pytest.mark.parametrize("data", EARLY_REJECTIONS.values(), ids=EARLY_REJECTIONS.keys())
def test_malformed_start_is_rejected_without_waiting_for_more(data: bytes) -> None:
    """The byte that makes a header impossible is rejected at once, not after more reads."""
    parser = ProxyHeaderParser()
    for byte in data[:-1]:
        assert parser.feed(bytes([byte])) is None
    with pytest.raises(ProxyProtocolError):
        parser.feed(data[-1:])


def test_empty_read_asks_for_more() -> None:
    """An empty chunk is no evidence either way."""
    assert ProxyHeaderParser().feed(b"") is None


def test_parser_refuses_bytes_after_its_result() -> None:
    """A parser serves one header: later bytes are the stream's, not the parser's."""
    parser = ProxyHeaderParser()
    parser.feed(b"PROXY UNKNOWN\r\n")
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_parser_refuses_bytes_after_an_error() -> None:
    """A rejected connection's parser does not parse again."""
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyProtocolError):
        parser.feed(b"GET")
    with pytest.raises(RuntimeError):
        parser.feed(b"PROXY UNKNOWN\r\n")


TRUSTED = [ip_network("127.0.0.0/8"), ip_network("10.0.0.0/8"), ip_network("::1/128")]


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", True),
        ("10.200.0.1", True),
        ("192.168.0.1", False),
        ("::1", True),
        ("::2", False),
        ("::ffff:127.0.0.1", True),
        ("::ffff:192.168.0.1", False),
        ("/run/echostat.sock", False),
        ("", False),
    ],
)
def test_peer_is_trusted_only_inside_a_trusted_network(peer: str, trusted: bool) -> None:
    """Trust follows the networks, IPv4-mapped IPv6 peers included; non-IP peers never."""
    assert is_trusted(peer, TRUSTED) is trusted


def test_no_network_trusts_nobody() -> None:
    """An empty trusted list rejects every peer."""
    assert is_trusted("127.0.0.1", []) is False


ports = st.integers(0, 65535)
ip_versions = st.sampled_from([st.ip_addresses(v=4), st.ip_addresses(v=6)])
renderings: list[Callable[[IPv4Address | IPv6Address], str]] = [
    str,
    lambda address: address.exploded,
    lambda address: str(address).upper(),
]


@st.composite
def v1_inet_headers(draw: st.DrawFn) -> Case:
    """v1 TCP4 or TCP6 lines, IPv6 written compressed, exploded or in capitals."""
    addresses = draw(ip_versions)
    hosts = [draw(addresses) for _ in range(2)]
    version = hosts[0].version
    render = draw(st.sampled_from(renderings))
    source_port, destination_port = draw(ports), draw(ports)
    line = f"PROXY TCP{version} {render(hosts[0])} {render(hosts[1])} "
    header = f"{line}{source_port} {destination_port}\r\n".encode()
    family = INET if version == 4 else INET6
    expected = result(1, family, (str(hosts[0]), source_port), (str(hosts[1]), destination_port))
    return Case(header, expected)


@st.composite
def v1_unknown_headers(draw: st.DrawFn) -> Case:
    """v1 UNKNOWN lines, bare or with anything but CR and LF before the CRLF."""
    text = draw(st.binary(max_size=92).filter(lambda b: b"\r" not in b and b"\n" not in b))
    header = b"PROXY UNKNOWN" + (b" " + text if draw(st.booleans()) else b"") + b"\r\n"
    return Case(header, result(1, UNSPEC))


tlvs = st.lists(st.builds(tlv, st.integers(0, 255), st.binary(max_size=64)), max_size=6).map(
    b"".join
)


@st.composite
def v2_inet_headers(draw: st.DrawFn) -> Case:
    """v2 PROXY headers over TCP/IPv4 or TCP/IPv6, with TLVs."""
    addresses = draw(ip_versions)
    hosts = [str(draw(addresses)) for _ in range(2)]
    version = 6 if ":" in hosts[0] else 4
    source_port, destination_port = draw(ports), draw(ports)
    block = inet_block(hosts[0], hosts[1], source_port, destination_port) + draw(tlvs)
    family_byte, family = (0x11, INET) if version == 4 else (0x21, INET6)
    expected = result(2, family, (hosts[0], source_port), (hosts[1], destination_port))
    return Case(v2_proxy(family_byte, block), expected)


@st.composite
def v2_local_headers(draw: st.DrawFn) -> Case:
    """v2 LOCAL headers, whose block (if any) is skipped unread."""
    family = draw(st.sampled_from([0x00, 0x01, 0x10, 0x11, 0x21, 0x31]))
    block = draw(st.binary(max_size=100))
    return Case(v2_header(0x0, family, block) + block, result(2, UNSPEC))


valid_headers = st.one_of(
    v1_inet_headers(), v1_unknown_headers(), v2_inet_headers(), v2_local_headers()
)


@st.composite
def mangled_headers(draw: st.DrawFn) -> bytes:
    """Valid headers with one byte replaced, dropped or inserted: the edge cases' neighbours."""
    header = bytearray(draw(valid_headers).header)
    position = draw(st.integers(0, len(header) - 1))
    byte = draw(st.integers(0, 255))
    edit = draw(st.sampled_from(["replace", "drop", "insert"]))
    if edit == "replace":
        header[position] = byte
    elif edit == "drop":
        del header[position]
    else:
        header.insert(position, byte)
    return bytes(header)


arbitrary_bytes = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b"PROXY " + b),
    st.binary(max_size=200).map(lambda b: V2_SIGNATURE + b),
    mangled_headers(),
)


def cuts_of(data: bytes) -> st.SearchStrategy[list[int]]:
    """Split points inside `data`."""
    return st.lists(st.integers(0, len(data)), max_size=len(data))


@property_settings
@given(st.data())
def test_any_split_of_a_valid_header_parses_to_its_result(data: st.DataObject) -> None:
    """A valid header and its stream, split anywhere, give the header's result and stream."""
    header, expected = data.draw(valid_headers)
    stream = header + data.draw(st.binary(max_size=64))
    parsed = feed_in_chunks(stream, data.draw(cuts_of(stream)))
    assert parsed == dataclasses.replace(expected, remainder=stream[len(header) :])


@property_settings
@given(st.data())
def test_any_bytes_split_anywhere_give_the_outcome_of_one_read(data: st.DataObject) -> None:
    """Any bytes give a result, a protocol error or a request for more, and splitting
    them changes none of it."""
    stream = data.draw(arbitrary_bytes)
    whole = outcome(stream, [])
    assert isinstance(whole, ProxyResult | str | None)
    assert outcome(stream, data.draw(cuts_of(stream))) == whole
