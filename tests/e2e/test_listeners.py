"""EchoServer keeps Tornado's lifecycle on its own accept loop: listen, echo, stop twice."""

from __future__ import annotations

import asyncio
import socket

import pytest

from echostat.server.config import LimitsConfig
from echostat.server.echo_server import EchoServer
from echostat.server.registry import Registry
from echostat.server.tcp_info import LISTEN_QUEUE_BYTES, TCP_INFO, accept_queue


async def test_tornado_listen_echoes_and_stop_closes_the_socket_once_or_twice() -> None:
    """`TCPServer.listen` reaches the composed accept loop; `stop` closes the listening
    socket and may be called again."""
    server = EchoServer(Registry(), LimitsConfig())
    server.listen(0, "127.0.0.1")
    (listener,) = server.registry.listeners
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"listen")
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"listen"
    writer.close()
    await writer.wait_closed()

    server.stop()
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        probe = socket.socket()
        try:
            probe.setblocking(False)
            await loop.sock_connect(probe, ("127.0.0.1", listener.port))
        finally:
            probe.close()
    await server.drain(0)


def test_a_listener_tells_how_many_clients_wait_to_be_accepted() -> None:
    """The kernel's TCP_INFO of a listening socket counts the clients in its accept queue,
    which the accept loop reads instead of accepting until the queue is found empty."""
    if TCP_INFO is None:
        pytest.skip("no TCP_INFO on this platform")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
        option = (socket.IPPROTO_TCP, TCP_INFO, LISTEN_QUEUE_BYTES)
        assert accept_queue(listener.getsockopt(*option)) == 3
        listener.accept()[0].close()
        assert accept_queue(listener.getsockopt(*option)) == 2
        for client in clients:
            client.close()
