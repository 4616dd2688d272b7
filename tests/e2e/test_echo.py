"""The echo data plane over real sockets: exact bytes, concurrency, half-close, backpressure."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from echostat.server.config import Config, LimitsConfig
from echostat.service import Service
from tests.conftest import loopback_config
from tests.helpers import half_close_echo, payload, reset_on_close, wait_until, within_deadline

MIB = 1024 * 1024
BUFFER_BYTES = 64 * 1024
"""A small per-connection bound, so backpressure engages early in every test here."""

_ASYNCIO_READ_CHUNK = 256 * 1024
"""The most an asyncio socket transport reads at once, i.e. past its pause threshold."""


@pytest.fixture
def config() -> Config:
    return loopback_config(
        limits=LimitsConfig(max_buffer_bytes=BUFFER_BYTES, max_connections_per_ip=0)
    )


async def test_every_byte_value_round_trips(service: Service) -> None:
    """All 256 byte values, forwards and backwards, come back unchanged."""
    data = bytes(range(256)) + bytes(reversed(range(256)))
    assert await half_close_echo(service.echo_port("main"), data) == data


@pytest.mark.parametrize(
    "size", [0, 1, 255, 65535, 65536, 65537, MIB, 16 * MIB], ids=lambda size: f"{size}B"
)
async def test_payload_round_trips_byte_exact(service: Service, size: int) -> None:
    """A payload of any size comes back byte for byte, in order, followed by EOF."""
    data = payload(size)
    echoed = await within_deadline(half_close_echo(service.echo_port("main"), data))
    assert len(echoed) == size
    assert echoed == data


async def test_200_concurrent_clients_each_get_their_own_bytes(service: Service) -> None:
    """200 clients at once each receive exactly their own distinct payload."""
    port = service.echo_port("main")
    sent = [payload(4096 + client, seed=client) for client in range(200)]
    echoed = await within_deadline(asyncio.gather(*(half_close_echo(port, d) for d in sent)))
    assert echoed == sent
    await wait_until(lambda: service.registry.closed == 200)


async def test_half_closed_client_gets_every_byte_back(service: Service) -> None:
    """After sending 10 MiB and shutting down its write side, a client reads it all, then EOF."""
    data = payload(10 * MIB)
    echoed = await within_deadline(half_close_echo(service.echo_port("main"), data))
    assert echoed == data
    await wait_until(lambda: service.registry.closed == 1)
    totals = service.registry.snapshot()
    assert (totals.bytes_received, totals.bytes_sent) == (len(data), len(data))


def _kernel_buffer_max_bytes(name: str) -> int:
    """The most TCP autotuning may give one socket's send or receive buffer here."""
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])


async def test_server_stops_reading_from_client_that_never_reads(service: Service) -> None:
    """A client that sends without reading is read no further than its bound; others echo on."""
    port = service.echo_port("main")
    client_rcvbuf = 64 * 1024  # fixed, which also turns autotuning off for the client side
    # What the server can have read from the stalled client: its own buffer plus one read
    # chunk, what fits in its socket's send buffer and in the client's receive buffer;
    # doubled, because the kernel's accounting may overshoot a buffer by a segment or so.
    bound = 2 * (
        BUFFER_BYTES
        + _ASYNCIO_READ_CHUNK
        + _kernel_buffer_max_bytes("tcp_wmem")
        + 2 * client_rcvbuf  # Linux doubles SO_RCVBUF for bookkeeping
    )
    flood = bytes(4 * bound)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, client_rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    _, stalled = await asyncio.open_connection(sock=sock)
    await wait_until(lambda: service.registry.active == 1)
    (server_side,) = list(service.registry.active_connections())
    stalled.write(flood)  # queued in the client's transport; drained only as the server reads
    await wait_until(lambda: server_side.bytes_received >= BUFFER_BYTES)

    others = [payload(MIB, seed=client) for client in range(8)]
    echoed = await within_deadline(asyncio.gather(*(half_close_echo(port, d) for d in others)))

    assert echoed == others
    assert server_side.bytes_received <= bound
    stalled.transport.abort()


async def test_reset_by_one_client_does_not_affect_another(service: Service) -> None:
    """A client closing with a TCP reset mid-echo leaves a concurrent client's echo intact."""
    port = service.echo_port("main")
    steady_reader, steady = await asyncio.open_connection("127.0.0.1", port)
    steady.write(b"before ")
    assert await steady_reader.readexactly(7) == b"before "

    resetting = socket.create_connection(("127.0.0.1", port))
    reset_on_close(resetting)
    resetting.setblocking(False)
    await asyncio.get_running_loop().sock_sendall(resetting, payload(MIB, seed=1))
    resetting.close()  # with its echo unread: the server may be writing to it right now
    await wait_until(lambda: service.registry.closed == 1)

    steady.write(b"after")
    steady.write_eof()
    assert await within_deadline(steady_reader.read()) == b"after"
    steady.close()


async def test_garbage_from_one_client_does_not_affect_another(service: Service) -> None:
    """Control bytes, invalid UTF-8 and protocol-looking noise are echoed without side effects."""
    port = service.echo_port("main")
    garbage = (
        b"\x00\xff\xfe\r\n\r\n\xff\xf4\xff\xfd\x06"  # NULs, CRLFs, telnet IAC interrupt
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xc3\x28\xa0\xa1" * 1000  # HTTP and bad UTF-8
    )
    clean = payload(MIB, seed=2)
    echoed = await within_deadline(
        asyncio.gather(half_close_echo(port, garbage), half_close_echo(port, clean))
    )
    assert list(echoed) == [garbage, clean]
