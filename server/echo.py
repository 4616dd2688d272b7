"""The echo data plane: `EchoServer` accepts connections, `EchoProtocol` echoes their bytes.

`EchoServer` is a Tornado `TCPServer` that keeps Tornado's binding and lifecycle but runs its
own accept loop (so it can count and register each connection before anything is scheduled,
and back off instead of spinning when the process runs out of file descriptors) and hands
every accepted socket to an asyncio transport on the same loop, the leanest reader/writer
the loop offers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import typing
from collections.abc import Iterable
from typing import Any

from tornado.ioloop import PeriodicCallback
from tornado.tcpserver import TCPServer

from echostat.server.accept import RateLimitedLog, watch_accepts
from echostat.server.access_log import AccessLog
from echostat.server.adopt import adopt
from echostat.server.budget import BufferBudget
from echostat.server.config import LimitsConfig, ListenerConfig
from echostat.server.proxy_protocol import (
    Endpoint,
    ProxyHeaderParser,
    ProxyProtocolError,
    is_trusted,
)
from echostat.server.registry import Connection, ListenerStats, Registry, peer_name
from echostat.server.resources import echo_may_keep
from echostat.server.tcp_info import BUFFER_BYTES, TCP_INFO, TcpInfo, decode

log = logging.getLogger(__name__)

_HOUSEKEEPING_S = 1.0
"""How often idle times are refreshed and time limits enforced."""

_EOF_LINGER_S = 2.0
"""After sending EOF at shutdown, how long a connection may stay open for its client's EOF."""


class EchoProtocol(Connection, asyncio.BufferedProtocol):
    """Writes every received chunk straight back; the record the registry counts.

    Reads land in the budget's shared buffer and are written back from it, so a client that
    reads its echo costs no allocation. Once the transport has to queue (`pause_writing`: the
    client reads slower than it sends), this connection takes that buffer over and reads into
    buffers of its own, charged to the budget, until the queue has drained (`resume_writing`).
    Meanwhile it stops reading whenever its queue passes `buffer_bytes` or the budget is spent,
    so a client that sends but doesn't read costs at most that plus one read.
    On the client's EOF the transport flushes what is queued, then closes (half-close safe).
    """

    __slots__ = (
        "_transport",
        "_registry",
        "_budget",
        "_buffer_bytes",
        "_sock",
        "_tls",
        "_queuing",
        "_own",
        "_charged",
    )

    def __init__(
        self,
        ip: str,
        port: int,
        listener: ListenerStats,
        registry: Registry,
        budget: BufferBudget,
        buffer_bytes: int,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(ip, port, listener)
        self._transport: asyncio.Transport | None = None
        self._registry = registry
        self._budget = budget
        self._buffer_bytes = buffer_bytes
        self._sock = sock
        self._tls = False
        """TLS transports encrypt (so copy) what they are given; plain ones keep a reference."""
        self._queuing = False
        """The transport holds bytes not yet sent: between pause_writing and resume_writing."""
        self._own: memoryview | None = None
        """While queuing, the unused rest of the buffer this connection reads into."""
        self._charged = 0
        """Bytes this connection holds against the budget."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport  # type: ignore[assignment]
        self._tls = self.listener.tls
        # Be told as soon as one byte is queued and again once all have gone; TLS transports
        # pause at size >= high, plain ones at size > high.
        high = 1 if self._tls else 0
        transport.set_write_buffer_limits(high=high, low=0)  # type: ignore[attr-defined]
        if self._tls:
            self.tls_protocol = transport.get_extra_info("ssl_object").version()
        if log.isEnabledFor(logging.DEBUG):  # spares building the arguments per connection
            log.debug(
                "connection %d from %s (via %s) on %s",
                self.id,
                self.peer,
                self.via or "direct",
                self.listener.name,
            )

    def get_buffer(self, sizehint: int) -> memoryview:
        own = self._own
        if own is None:
            return self._budget.view
        if not own:
            own = self._own = self._budget.new_buffer()
            self._charged += len(own)
        return own

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        self.bytes_sent += nbytes
        own = self._own
        if own is None:
            self._transport.write(self._budget.view[:nbytes])  # type: ignore[union-attr]
            if self._queuing:
                self._adopt(nbytes)
        else:
            self._own = own[nbytes:]
            self._transport.write(own[:nbytes])  # type: ignore[union-attr]
            self._account()

    def echo_bytes(self, data: bytes) -> None:
        """Echo `data` that arrived before this protocol took the connection over."""
        self.bytes_received += len(data)
        self.bytes_sent += len(data)
        self._transport.write(data)  # type: ignore[union-attr]
        if self._queuing:
            self._account()

    def pause_writing(self) -> None:
        self._queuing = True

    def resume_writing(self) -> None:
        """Everything queued has been sent: give the buffers back and read again."""
        self._queuing = False
        self._release()
        self._transport.resume_reading()  # type: ignore[union-attr]

    def _adopt(self, nbytes: int) -> None:
        """The transport kept part of the shared buffer: make that buffer this connection's."""
        if not self._tls:
            taken = self._budget.take_view()
            self._charged += len(taken)
            self._own = taken[nbytes:]
        self._account()

    def _account(self) -> None:
        """Charge what a TLS transport holds; stop reading while this connection holds too
        much or the budget is spent."""
        transport = self._transport
        assert transport is not None
        queued = transport.get_write_buffer_size()
        if self._tls:
            self._budget.charge(queued - self._charged)
            self._charged = queued
        if queued > self._buffer_bytes or self._budget.spent:
            transport.pause_reading()

    def _release(self) -> None:
        self._own = None
        if self._charged:
            self._budget.charge(-self._charged)
            self._charged = 0

    def eof_received(self) -> None:
        """Returning None lets the transport flush everything queued, then close."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        # A reset or an EOF is the client's doing; anything else was a fault of ours.
        fault = exc is not None and not isinstance(exc, OSError)
        if isinstance(exc, ConnectionResetError):
            self.end_reason = "client_reset"
        elif isinstance(exc, OSError):
            self.end_reason = "client_error"
        self._registry.close(self, "error" if fault else None)
        if log.isEnabledFor(logging.DEBUG):
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

    def read_tcp_info(self) -> TcpInfo | None:
        if TCP_INFO is None or self._sock is None:
            return None
        try:
            return decode(self._sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, BUFFER_BYTES))
        except OSError:  # already closed: a connection whose setup failed
            return None

    def finish(self) -> None:
        """Stop reading; send back what was already read, then EOF; then drop further input.

        Input after our EOF is read and discarded rather than left unread, because closing
        a socket with unread input sends a reset that can destroy the echo in flight.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self.end_reason = "shutdown"
        if transport.can_write_eof():
            transport.write_eof()
            transport.set_protocol(_Discard(self))
            transport.resume_reading()
        else:
            transport.close()

    def expire(self, reason: str) -> None:
        """End the connection for `reason`, counted as closed by the server.

        Nothing queued is worth waiting for here (the client stopped reading, or time is
        up), so the connection is aborted rather than flushed.
        """
        self._registry.close(self, reason)
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


class _ProxyHeader(asyncio.Protocol):
    """Reads a PROXY protocol header, then hands the connection to its `EchoProtocol`.

    The echo protocol is registered only once the header names the real client, under
    that client's address, with the balancer's as `via`; a missing, malformed or slow
    header closes the connection and counts it as rejected instead.
    """

    def __init__(self, echo: EchoProtocol, server: EchoServer, timeout_s: float) -> None:
        self._echo = echo
        self._server = server
        self._timeout_s = timeout_s
        self._parser = ProxyHeaderParser()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._outcome: str | None = None
        server._awaiting_header += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout_s, self._fail, "proxy_header_timeout")

    def data_received(self, data: bytes) -> None:
        try:
            result = self._parser.feed(data)
        except ProxyProtocolError as exc:
            log.debug("connection from %s: bad PROXY header: %s", self._echo.peer, exc.reason)
            self._fail("proxy_header_invalid")
            return
        if result is not None:
            self._hand_over(result.source, result.remainder)

    def eof_received(self) -> None:
        self._fail("proxy_header_invalid")

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("proxy_header_invalid")

    def _hand_over(self, source: Endpoint | None, remainder: bytes) -> None:
        echo, server, transport = self._echo, self._server, self._transport
        assert transport is not None
        if source is not None:
            echo.via = echo.peer
            echo.ip, echo.port = source
        if server._over_ip_limit(echo.ip):
            self._fail("max_connections_per_ip")
            return
        self._settle("registered")
        server.registry.open(echo)
        transport.set_protocol(echo)
        echo.connection_made(transport)
        if remainder:
            echo.echo_bytes(remainder)

    def _fail(self, reason: str) -> None:
        """Reject the connection for `reason`, unless its fate is already settled."""
        if self._settle(reason):
            self._server._reject(reason, self._echo.peer, self._echo.listener.name)
            if self._transport is not None:
                self._transport.abort()

    def _settle(self, outcome: str) -> bool:
        """Record the first outcome only; True if this call was it."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        self._server._awaiting_header -= 1
        if self._timer is not None:
            self._timer.cancel()
        return True


class EchoServer(TCPServer):
    """Echoes every byte back on the connection it came from, counting it in a `Registry`.

    Use `add_sockets` with sockets from `tornado.netutil.bind_sockets`; `stop` stops
    accepting; `drain` then ends the open connections gracefully. Limits are checked when a
    connection is accepted, before anything is scheduled for it, so a burst can't overshoot.
    """

    def __init__(self, registry: Registry, limits: LimitsConfig) -> None:
        super().__init__()
        self.registry = registry
        self.limits = limits
        self._listeners: dict[str, ListenerConfig] = {}
        """Settings of each listener by name; `reconfigure` replaces them for new clients."""
        self.budget = BufferBudget(limits.max_buffered_bytes)
        registry.budget = self.budget
        self._setups: set[asyncio.Task[Any]] = set()
        self._awaiting_header = 0
        self._rejections = RateLimitedLog(log, interval_s=10.0)
        self.access_log: AccessLog | None = None
        self._housekeeping = PeriodicCallback(self._expire_connections, _HOUSEKEEPING_S * 1000)

    def add_sockets(
        self,
        sockets: Iterable[socket.socket],
        stats: ListenerStats | None = None,
        config: ListenerConfig | None = None,
    ) -> None:
        """Start accepting on `sockets`, counting their connections under `stats`, with the
        TLS and PROXY protocol settings of `config`.

        Without `stats`, each socket is registered as a plain listener named ``main``.
        """
        config = config or ListenerConfig()
        # Asking for the running loop costs a getpid() call each time: pass it along instead.
        loop = asyncio.get_running_loop()
        for sock in sockets:
            if stats is None:
                host, port = sock.getsockname()[:2]
                stats = self.registry.add_listener(config.name, host, port)
            self._listeners[stats.name] = config
            on_accept = functools.partial(self._start_connection, loop, stats)
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = watch_accepts(sock, on_accept, stats.name)
        if not self._housekeeping.is_running():
            self._housekeeping.start()

    def reconfigure(self, limits: LimitsConfig, listeners: Iterable[ListenerConfig]) -> None:
        """New limits and listener settings (TLS context, PROXY rules) for clients from now
        on; open connections keep theirs, while time limits apply to them at the next check."""
        self.limits = limits
        for listener in listeners:
            self._listeners[listener.name] = listener

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
                conn.expire("shutdown")
        self._housekeeping.stop()
        return len(remaining)

    async def _wait_for_no_connections(self, timeout_s: float) -> None:
        if not self.registry.active:
            return
        all_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_last_close() -> None:
            if not all_closed.done():
                all_closed.set_result(None)

        self.registry.on_last_close = on_last_close
        try:
            await asyncio.wait_for(all_closed, timeout_s)
        except TimeoutError:
            pass
        finally:
            self.registry.on_last_close = None

    def _start_connection(
        self,
        loop: asyncio.AbstractEventLoop,
        stats: ListenerStats,
        connection: socket.socket,
        address: Any,
    ) -> None:
        ip, port = address[0], address[1]
        config = self._listeners[stats.name]
        if config.proxy_protocol:
            reason = self._over_limit(None)
            if reason is None and not is_trusted(ip, config.trusted_networks):
                reason = "proxy_untrusted"
        else:
            reason = self._over_limit(ip)
        if reason is None and not echo_may_keep(connection.fileno()):
            reason = "descriptor_limit"
        if reason is not None:
            connection.close()
            self._reject(reason, peer_name(ip, port), stats.name)
            return
        echo = EchoProtocol(
            ip, port, stats, self.registry, self.budget, self.limits.max_buffer_bytes, connection
        )
        protocol: asyncio.BaseProtocol = echo
        if config.proxy_protocol:
            protocol = _ProxyHeader(echo, self, config.proxy_header_timeout_s)
        else:
            self.registry.open(echo)
        tls = config.tls
        if tls is None:
            setup = loop.connect_accepted_socket(lambda: protocol, connection)
            adopt(setup, functools.partial(self._setup_failed, echo, connection))
            return
        # A handshake takes long enough to be worth a task, which shutdown can cancel.
        handshake = loop.create_task(
            loop.connect_accepted_socket(
                lambda: protocol,
                connection,
                ssl=tls.context,
                ssl_handshake_timeout=tls.handshake_timeout_s,
            )
        )
        self._setups.add(handshake)
        handshake.add_done_callback(lambda task: self._handshake_done(task, echo, connection))

    def _over_limit(self, ip: str | None) -> str | None:
        """The name of the limit a new connection from `ip` would exceed, if any.

        Connections still sending their PROXY header count against `max_connections`; with
        `ip` None (a balancer's address) the per-IP limit waits for the real client's.
        """
        if self.registry.active + self._awaiting_header >= self.limits.max_connections:
            return "max_connections"
        if ip is not None and self._over_ip_limit(ip):
            return "max_connections_per_ip"
        return None

    def _over_ip_limit(self, ip: str) -> bool:
        per_ip = self.limits.max_connections_per_ip
        return bool(per_ip) and self.registry.active_from(ip) >= per_ip

    def _reject(self, reason: str, peer: str, listener: str) -> None:
        self.registry.reject(reason)
        self._rejections.warning("rejected %s on %s: %s", peer, listener, reason)
        if self.access_log is not None:
            self.access_log.rejected(reason, peer, listener)

    def _handshake_done(
        self, task: asyncio.Task[Any], protocol: EchoProtocol, connection: socket.socket
    ) -> None:
        self._setups.discard(task)
        if task.cancelled():
            self._setup_failed(protocol, connection, asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self._setup_failed(protocol, connection, error)

    def _setup_failed(
        self, protocol: EchoProtocol, connection: socket.socket, error: BaseException
    ) -> None:
        """Clean up a connection whose transport never came up (e.g. a failed TLS handshake)."""
        log.debug("connection from %s failed in setup: %r", protocol.peer, error)
        connection.close()
        self.registry.close(protocol, "setup_failed")

    def _expire_connections(self) -> None:
        """Once a second: refresh idle times, then end connections past a time limit."""
        self.registry.sweep()
        limits = self.limits
        if not (limits.idle_timeout_s or limits.max_lifetime_s):
            return
        now = self.registry.clock()
        wall_now = self.registry.wall_clock()
        for conn in list(self.registry.active_connections()):
            if not isinstance(conn, EchoProtocol):
                continue
            if limits.idle_timeout_s and now - conn.last_activity >= limits.idle_timeout_s:
                conn.expire("idle_timeout")
            elif limits.max_lifetime_s and wall_now - conn.connected_at >= limits.max_lifetime_s:
                conn.expire("max_lifetime")
