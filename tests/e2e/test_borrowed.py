"""The private behaviour server/borrowed.py relies on is still there, on both event loops.

Each failure names what is gone; the fix is then to fall back to the public way in
server/borrowed.py (`sock.accept()`, a plain `socket.socket`, a Task per connection).
"""

from __future__ import annotations

import _socket
import asyncio
import socket
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from echostat.server.borrowed import AcceptedSocket, accept_call, adopt

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "asyncio": asyncio.run,
    "uvloop": uvloop.run,
}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def accepted(listener: socket.socket) -> tuple[AcceptedSocket, socket.socket]:
    """A connected client and the server side of it, accepted the borrowed way."""
    client = socket.create_connection(listener.getsockname())
    assert hasattr(listener, "_accept"), "socket.socket._accept is gone"
    fd, _ = accept_call(listener)()
    return AcceptedSocket(listener.family, listener.type, listener.proto, fileno=fd), client


def test_private_accept_gives_a_descriptor_and_an_address(listener: socket.socket) -> None:
    """`socket.socket._accept` still returns (descriptor, address), as `accept_call` expects."""
    client = socket.create_connection(listener.getsockname())
    fd, address = accept_call(listener)()
    assert isinstance(fd, int), f"socket.socket._accept returned {fd!r}, not a descriptor"
    assert address == client.getsockname()
    socket.socket(fileno=fd).close()
    client.close()


def test_accepted_socket_reads_family_and_type_as_plain_ints(listener: socket.socket) -> None:
    """`_socket.socket.family` and `.type` still exist and read ints equal to the enums."""
    for name in ("family", "type"):
        assert hasattr(_socket.socket, name), f"_socket.socket.{name} is gone"
    server, client = accepted(listener)
    assert type(server.family) is int and server.family == socket.AF_INET
    assert type(server.type) is int and server.type == socket.SOCK_STREAM
    server.close()
    client.close()


class _Echo(asyncio.Protocol):
    def __init__(self) -> None:
        self.made = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_connect_accepted_socket_can_be_stepped_without_a_task(
    loop_name: str, listener: socket.socket
) -> None:
    """`connect_accepted_socket` is a coroutine suspending on futures, and `adopt` steps it
    to a working transport."""
    server, client = accepted(listener)
    failures: list[BaseException] = []

    async def check() -> None:
        loop = asyncio.get_running_loop()
        protocol = _Echo()
        setup = loop.connect_accepted_socket(lambda: protocol, server)
        assert hasattr(setup, "send"), f"{loop_name}: connect_accepted_socket is not a coroutine"
        adopt(setup, failures.append)
        await asyncio.wait_for(protocol.made, 5)
        await loop.sock_sendall(client, b"borrowed")
        client.setblocking(False)
        assert await asyncio.wait_for(loop.sock_recv(client, 64), 5) == b"borrowed"
        protocol.transport.close()

    LOOPS[loop_name](check())
    assert not failures, f"{loop_name}: stepping connect_accepted_socket failed: {failures}"
    client.close()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_connect_accepted_socket_waits_only_on_futures(
    loop_name: str, listener: socket.socket
) -> None:
    """What the coroutine suspends on is a future with `add_done_callback`, which `adopt`
    resumes it from."""
    server, client = accepted(listener)

    async def check() -> None:
        loop = asyncio.get_running_loop()
        setup = loop.connect_accepted_socket(asyncio.Protocol, server)
        waiting = setup.send(None)
        assert asyncio.isfuture(waiting) and hasattr(waiting, "add_done_callback"), (
            f"{loop_name}: connect_accepted_socket waits on {waiting!r}, not a future"
        )
        resumed = loop.create_future()
        waiting.add_done_callback(lambda _: resumed.set_result(None))
        await resumed
        with pytest.raises(StopIteration) as done:
            setup.send(None)
        transport, _ = done.value.value
        transport.close()

    LOOPS[loop_name](check())
    client.close()
