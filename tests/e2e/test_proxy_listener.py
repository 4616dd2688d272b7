"""A listener with proxy_protocol: true believes PROXY headers only from trusted networks."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from echostat.server.config import Config, LimitsConfig, ListenerConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.helpers import DEADLINE_S, wait_until


def listener(**changes: object) -> ListenerConfig:
    fields = {
        "name": "lb",
        "host": "127.0.0.1",
        "port": 0,
        "proxy_protocol": True,
        "proxy_trusted": ("127.0.0.0/8",),
        "proxy_header_timeout_s": 1.0,
        **changes,
    }
    return ListenerConfig(**fields)  # type: ignore[arg-type]


@pytest.fixture
def config() -> Config:
    return loopback_config(listeners=(listener(),))


def v2_header(client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """A PROXY v2 header for a TCP over IPv4 connection from `client` to `server`."""
    addresses = struct.pack(
        "!4s4sHH",
        socket.inet_aton(client[0]),
        socket.inet_aton(server[0]),
        client[1],
        server[1],
    )
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12) + addresses


async def exchange(port: int, chunks: list[bytes], expect: int) -> bytes:
    """Send `chunks` one write at a time, then read `expect` bytes or until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(expect) if expect else reader.read(), DEADLINE_S)
    except ConnectionResetError:
        data = b""
    writer.close()
    return data


async def test_v1_header_names_the_real_client_and_the_balancer(service: Service) -> None:
    """The client from the header is `peer`; the connection's own address is `via`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.echo_port("lb"))
    writer.write(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 7008\r\nhello")
    assert await asyncio.wait_for(reader.readexactly(5), DEADLINE_S) == b"hello"
    (conn,) = service.registry.connections()
    assert conn.peer == "198.51.100.7:40000"
    assert conn.via is not None and conn.via.startswith("127.0.0.1:")
    writer.close()


async def test_v2_header_split_into_single_bytes_still_parses(service: Service) -> None:
    header = v2_header(("203.0.113.9", 51000), ("192.0.2.1", 7008))
    chunks = [bytes([b]) for b in header] + [b"payload"]
    echoed = await exchange(service.echo_port("lb"), chunks, expect=7)
    assert echoed == b"payload"
    assert service.registry.accepted == 1


async def test_missing_header_is_rejected_with_its_own_reason(service: Service) -> None:
    """A client that speaks without a header gets nothing back and is counted."""
    echoed = await exchange(service.echo_port("lb"), [b"GET / HTTP/1.0\r\n\r\n"], expect=0)
    assert echoed == b""
    await wait_until(lambda: service.registry.rejected["proxy_header_invalid"] == 1)
    assert service.registry.accepted == 0


async def test_slow_header_times_out(service: Service) -> None:
    """Half a header and then silence: closed after proxy_header_timeout_s."""
    echoed = await exchange(service.echo_port("lb"), [b"PROXY TCP4 198.51"], expect=0)
    assert echoed == b""
    assert service.registry.rejected["proxy_header_timeout"] == 1


@pytest.mark.parametrize(
    "config",
    [loopback_config(listeners=(listener(proxy_trusted=("10.0.0.0/8",)),))],
)
async def test_header_from_an_untrusted_network_is_refused(service: Service) -> None:
    """Only balancers in proxy_trusted may claim another client's address."""
    header = b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 7008\r\n"
    echoed = await exchange(service.echo_port("lb"), [header + b"hi"], expect=0)
    assert echoed == b""
    assert service.registry.rejected["proxy_untrusted"] == 1
    assert service.registry.accepted == 0


@pytest.mark.parametrize(
    "config",
    [loopback_config(listeners=(listener(),), limits=LimitsConfig(max_connections_per_ip=1))],
)
async def test_per_ip_limit_applies_to_the_client_from_the_header(service: Service) -> None:
    """Two clients behind one balancer are two IPs; the same client twice is one."""
    port = service.echo_port("lb")
    first = await asyncio.open_connection("127.0.0.1", port)
    first[1].write(b"PROXY TCP4 198.51.100.7 192.0.2.1 40000 7008\r\nx")
    assert await asyncio.wait_for(first[0].readexactly(1), DEADLINE_S) == b"x"
    other = await exchange(port, [b"PROXY TCP4 198.51.100.8 192.0.2.1 40000 7008\r\ny"], 1)
    assert other == b"y"
    same = await exchange(port, [b"PROXY TCP4 198.51.100.7 192.0.2.1 40001 7008\r\nz"], 0)
    assert same == b""
    assert service.registry.rejected["max_connections_per_ip"] == 1
    first[1].close()


async def test_an_invalid_header_is_warned_about_with_what_is_wrong(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A v2 header whose TLVs take it past the parser's cap: the warning says why it was
    refused, not only that it was invalid."""
    caplog.set_level(logging.WARNING, logger="echostat.server.admission")
    header = v2_header(("203.0.113.9", 51000), ("192.0.2.1", 7008))
    tlv = b"\x04" + struct.pack("!H", 600) + bytes(600)
    oversized = header[:14] + struct.pack("!H", 12 + len(tlv)) + header[16:] + tlv
    assert await exchange(service.echo_port("lb"), [oversized], expect=0) == b""
    await wait_until(lambda: service.registry.rejected["proxy_header_invalid"] == 1)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.endswith("on lb: proxy_header_invalid (v2 header longer than 552 bytes)")


async def test_a_header_cut_short_by_the_client_is_warned_about_as_cut_short(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Half a header, then the client's EOF: the warning says the header was cut short,
    as it says what was wrong with a malformed one."""
    caplog.set_level(logging.WARNING, logger="echostat.server.admission")
    reader, writer = await asyncio.open_connection("127.0.0.1", service.echo_port("lb"))
    writer.write(b"PROXY TCP4 198.51")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""
    writer.close()
    await wait_until(lambda: service.registry.rejected["proxy_header_invalid"] == 1)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.endswith("proxy_header_invalid (closed before the header was complete)")
