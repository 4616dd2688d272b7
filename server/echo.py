"""The echo data plane: `EchoServer` accepts connections, `EchoProtocol` echoes their bytes.

`EchoServer` is a Tornado `TCPServer` that keeps Tornado's binding and lifecycle but runs its
own accept loop (so it can count and register each connection before anything is scheduled,
and back off instead of spinning when the process runs out of file descriptors) and hands
every accepted socket to an asyncio transport on the same loop, the leanest reader/writer
the loop offers.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any, cast

from tornado.ioloop import IOLoop
from tornado.tcpserver import TCPServer

from server.stats import Connection, ListenerStats, Registry

log = logging.getLogger(__name__)

_ACCEPTS_PER_WAKEUP = 128
"""Accept at most this many connections per readiness event, so a flood can't starve echoes."""

_ACCEPT_BACKOFF_S = (0.05, 1.0)
"""First and longest pause of the accept loop after the process ran out of descriptors."""

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

_EOF_LINGER_S = 2.0
"""After sending EOF at shutdown, how long a connection may stay open for its client's EOF."""


def format_peer(address: Any) -> str:
    """``host:port`` for IPv4, ``[host]:port`` for IPv6, the path for Unix sockets."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


class EchoProtocol(Connection, asyncio.Protocol):
    """Writes every received chunk straight back; the record the registry counts.

    Backpressure: the transport's write buffer holds at most `buffer_bytes` before reading
    is paused, so a client that sends but doesn't read costs at most that plus one read chunk.
    On the client's EOF the transport flushes what is queued, then closes (half-close safe).
    """

    __slots__ = ("_transport", "_registry", "_buffer_bytes")

    def __init__(
        self, peer: str, listener: ListenerStats, registry: Registry, buffer_bytes: int
    ) -> None:
        super().__init__(peer, listener)
        self._transport: asyncio.Transport | None = None
        self._registry = registry
        self._buffer_bytes = buffer_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=self._buffer_bytes)
        log.debug("connection %d from %s on %s", self.id, self.peer, self.listener.name)

    def data_received(self, data: bytes) -> None:
        size = len(data)
        self.bytes_received += size
        self.bytes_sent += size
        self._transport.write(data)  # type: ignore[union-attr]

    def eof_received(self) -> None:
        """Returning None lets the transport flush everything queued, then close."""

    def pause_writing(self) -> None:
        self._transport.pause_reading()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        self._transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.close(self)
        log.debug(
            "connection %d from %s closed (%s): %d bytes in, %d out",
            self.id,
            self.peer,
            exc or "eof",
            self.bytes_received,
            self.bytes_sent,
        )

    def unsent_bytes(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def finish(self) -> None:
        """Stop reading; send back what was already read, then EOF; then drop further input.

        Input after our EOF is read and discarded rather than left unread, because closing
        a socket with unread input sends a reset that can destroy the echo in flight.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            transport.set_protocol(_Discard(self))
            transport.resume_reading()
        else:
            transport.close()

    def abort(self) -> None:
        """Close at once, dropping anything still queued."""
        if self._transport is not None:
            self._transport.abort()


class _Discard(asyncio.Protocol):
    """Takes over a finished connection: ignores input, closes on the client's EOF."""

    def __init__(self, echo: EchoProtocol) -> None:
        self._echo = echo

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._echo.connection_lost(exc)


class EchoServer(TCPServer):
    """Echoes every byte back on the connection it came from, counting it in a `Registry`.

    Use `add_sockets` with sockets from `tornado.netutil.bind_sockets`; `stop` stops
    accepting; `drain` then ends the open connections gracefully.
    """

    def __init__(self, registry: Registry, buffer_bytes: int) -> None:
        super().__init__()
        self.registry = registry
        self.buffer_bytes = buffer_bytes
        self._setups: set[asyncio.Task[Any]] = set()

    def add_sockets(
        self,
        sockets: Iterable[socket.socket],
        listener: ListenerStats | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Start accepting on `sockets`, counting their connections under `listener`.

        Without `listener`, each socket is registered as a listener named ``main``.
        """
        for sock in sockets:
            if listener is None:
                host, port = sock.getsockname()[:2]
                listener = self.registry.add_listener("main", host, port)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._watch(sock, listener, ssl_context)

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for clients to close, then finish the rest; return how many."""
        await self._wait_for_no_connections(grace_s)
        remaining = list(self.registry.active_connections())
        for conn in remaining:
            if isinstance(conn, EchoProtocol):
                conn.finish()
        await self._wait_for_no_connections(_EOF_LINGER_S)
        for conn in list(self.registry.active_connections()):
            if isinstance(conn, EchoProtocol):
                conn.abort()
        return len(remaining)

    async def _wait_for_no_connections(self, timeout_s: float) -> None:
        if not self.registry.active:
            return
        all_closed = asyncio.get_running_loop().create_future()
        self.registry.on_last_close = lambda: all_closed.done() or all_closed.set_result(None)
        try:
            await asyncio.wait_for(all_closed, timeout_s)
        except TimeoutError:
            pass
        finally:
            self.registry.on_last_close = None

    def _watch(
        self, sock: socket.socket, listener: ListenerStats, ssl_context: ssl.SSLContext | None
    ) -> Callable[[], None]:
        """Register the accept handler of `sock`; return the callable that unregisters it."""
        io_loop = IOLoop.current()
        backoff_s = _ACCEPT_BACKOFF_S[0]
        retry: Any = None

        def on_readable(fd: Any, events: int) -> None:
            nonlocal backoff_s, retry
            for _ in range(_ACCEPTS_PER_WAKEUP):
                try:
                    conn, address = sock.accept()
                except BlockingIOError:
                    backoff_s = _ACCEPT_BACKOFF_S[0]
                    return
                except ConnectionAbortedError:
                    continue  # the client gave up while queued; nothing to do
                except OSError as exc:
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    # Out of descriptors or memory: the pending connection stays queued and
                    # the socket stays readable, so retrying at once would spin. Pause instead.
                    log.warning(
                        "listener %s: cannot accept (%s); pausing accepts for %.2f s",
                        listener.name,
                        exc.strerror,
                        backoff_s,
                    )
                    io_loop.remove_handler(sock)
                    retry = io_loop.call_later(backoff_s, resume)
                    backoff_s = min(backoff_s * 2, _ACCEPT_BACKOFF_S[1])
                    return
                self._start_connection(conn, address, listener, ssl_context)

        def resume() -> None:
            nonlocal retry
            retry = None
            io_loop.add_handler(sock, on_readable, IOLoop.READ)

        def unwatch() -> None:
            if retry is not None:
                io_loop.remove_timeout(retry)
            else:
                io_loop.remove_handler(sock)

        io_loop.add_handler(sock, on_readable, IOLoop.READ)
        return unwatch

    def _start_connection(
        self,
        conn: socket.socket,
        address: Any,
        listener: ListenerStats,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        protocol = EchoProtocol(format_peer(address), listener, self.registry, self.buffer_bytes)
        self.registry.open(protocol)
        loop = asyncio.get_running_loop()
        setup = loop.create_task(
            loop.connect_accepted_socket(lambda: protocol, conn, ssl=ssl_context)
        )
        self._setups.add(setup)
        setup.add_done_callback(lambda task: self._setup_done(task, protocol, conn))

    def _setup_done(
        self, task: asyncio.Task[Any], protocol: EchoProtocol, conn: socket.socket
    ) -> None:
        self._setups.discard(task)
        if task.cancelled() or task.exception() is not None:
            log.debug("connection from %s failed in setup: %r", protocol.peer, task.exception())
            conn.close()
            self.registry.close(protocol)
