"""The probe's address parsing and PROXY headers, read back by echostat's own parser."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from echostat.probe.address import parse_host_port, parse_ip_port
from echostat.probe.proxy_header import proxy_header
from echostat.server.proxy_protocol import Endpoint, ProxyHeaderParser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7007", ("127.0.0.1", 7007)),
        ("echo.example.net:7", ("echo.example.net", 7)),
        ("[::1]:7007", ("::1", 7007)),
        ("[fe80::1%eth0]:7", ("fe80::1%eth0", 7)),
    ],
)
def test_target_is_host_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text", ["7007", ":7007", "host:", "host:x", "host:65536", "[::1]7007", "[nope]:7", "::1:7"]
)
def test_malformed_target_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("[", r"\[")):
        parse_host_port(text)


def test_proxy_source_needs_a_literal_address() -> None:
    assert parse_ip_port("[2001:db8::7]:40000") == (ip_address("2001:db8::7"), 40000)
    with pytest.raises(ValueError, match="expected IP:PORT"):
        parse_ip_port("client.example:40000")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("source", "destination"),
    [(("203.0.113.7", 40000), ("127.0.0.1", 7008)), (("2001:db8::7", 1), ("::1", 7008))],
)
def test_proxy_header_reads_back_as_the_addresses_it_names(
    version: str, source: tuple[str, int], destination: tuple[str, int]
) -> None:
    header = proxy_header(
        version, (ip_address(source[0]), source[1]), (ip_address(destination[0]), destination[1])
    )
    result = ProxyHeaderParser().feed(header + b"payload")
    assert result is not None
    assert (result.version, result.remainder) == (int(version[1]), b"payload")
    assert (result.source, result.destination) == (Endpoint(*source), Endpoint(*destination))
