"""The echo of one TCP connection: `EchoProtocol` writes every byte back, counting it.

It runs on an asyncio transport (the leanest reader/writer the loop offers) that
`echo_server.EchoServer` creates for every accepted socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from echostat.server.budget import BufferBudget
from echostat.server.registry import Connection, ListenerStats, Registry, ServerCloseReason
from echostat.server.tcp_info import (
    ADVMSS_BUFFER_BYTES,
    BUFFER_BYTES,
    TCP_INFO,
    TcpInfo,
    advertised_mss,
    decode,
)

log = logging.getLogger(__name__)


class EchoProtocol(Connection, asyncio.Protocol):
    """Writes every received chunk straight back; the record the registry counts.

    While the budget has room, reads land in the event loop's own buffer and arrive as
    `data_received` (the loop's cheapest read). Once the transport has to queue
    (`pause_writing`: the client reads slower than it sends), that read is charged and the
    connection reads on into buffers the budget lends (a `_Lent` stands in as the transport's
    protocol), charged too, until the queue has drained (`resume_writing`). While the budget
    is nearly spent, every connection reads into lent buffers, whose size the budget keeps
    within it. A connection stops reading whenever its queue passes `buffer_bytes` or the
    budget is spent, so a client that sends but doesn't read costs at most that plus one read.
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
        "_lent",
        "_own",
        "_charged",
        "_held_read",
        "_listener_mss",
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
        self._lent: _Lent | None = None
        """The transport's protocol while this connection reads into lent buffers."""
        self._own: memoryview | None = None
        """While reading into lent buffers of its own, the unused rest of the current one."""
        self._charged = 0
        """Bytes this connection holds against the budget."""
        self._held_read = 0
        """Of those, a read into the loop's buffer that the transport holds."""

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
            self._registry.read_now(self)
        if self._budget.lending:
            self.lend(True)
        if log.isEnabledFor(logging.DEBUG):  # spares building the arguments per connection
            log.debug(
                "connection %d from %s (via %s) on %s",
                self.id,
                self.peer,
                self.via or "direct",
                self.listener.name,
            )

    def data_received(self, data: bytes) -> None:
        nbytes = len(data)
        self.bytes_received += nbytes
        self.bytes_sent += nbytes
        self._transport.write(data)  # type: ignore[union-attr]
        if self._queuing:
            self._queued(nbytes)

    def lend(self, lending: bool) -> None:
        """Read into lent buffers from now on (`lending`), or into the loop's own again, if
        this connection reads at all and nothing of its own is queued."""
        transport = self._transport
        if (
            transport is None
            or self._queuing
            or transport.get_protocol() is not (self._lent or self)
            or lending is (self._lent is not None)
        ):
            return
        self._lent = _Lent(self) if lending else None
        transport.set_protocol(self._lent or self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where a read goes while this connection reads into lent buffers."""
        own = self._own
        if own is None:
            return self._budget.view
        if not own:
            own = self._own = self._budget.new_buffer()
            self._charged += len(own)
        return own

    def buffer_updated(self, nbytes: int) -> None:
        """`nbytes` were read into the buffer `get_buffer` gave."""
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

    def pause_writing(self) -> None:
        self._queuing = True

    def resume_writing(self) -> None:
        """Everything queued has been sent: give the buffers back and read again."""
        self._queuing = False
        self._release()
        if not self._budget.lending:
            self.lend(False)
        self._transport.resume_reading()  # type: ignore[union-attr]

    def _queued(self, nbytes: int) -> None:
        """The transport queued echo of a read of `nbytes` into the loop's buffer."""
        if not self._tls:
            # It keeps that read's bytes: charge them, and read on into buffers of our own.
            self._budget.charge(nbytes, held_read=True)
            self._held_read = nbytes
            self._own = _NOTHING_LEFT
            self._lent = _Lent(self)
            self._transport.set_protocol(self._lent)  # type: ignore[union-attr]
        self._account()

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
        if self._held_read:
            self._budget.charge(-self._held_read, held_read=True)
            self._held_read = 0
        if self._charged:
            self._budget.charge(-self._charged)
            self._charged = 0

    def eof_received(self) -> None:
        """Returning None lets the transport flush everything queued, then close."""
        if self._tls:
            self._registry.read_now(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Count the connection closed, then let go of its transport: the transport (with a
        TLS connection's buffers) and this record are freed now, not by a later collection."""
        if self._charged or self._held_read:
            self._release()
        # A reset or an EOF is the client's doing; anything else was a fault of ours.
        fault = exc is not None and not isinstance(exc, OSError)
        if isinstance(exc, ConnectionResetError):
            self.end_reason = "client_reset"
        elif isinstance(exc, OSError):
            self.end_reason = "client_error"
        self._registry.close(self, "error" if fault else None)
        self._transport = self._lent = None
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

    def listener_mss(self) -> int | None:
        try:
            return self._listener_mss
        except AttributeError:  # first ask: left unset at accept, which costs nothing
            pass
        mss = None
        if TCP_INFO is not None and self._sock is not None:
            try:
                data = self._sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, ADVMSS_BUFFER_BYTES)
                mss = advertised_mss(data)
            except OSError:  # already closed
                pass
        self._listener_mss: int | None = mss
        return mss

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

    def expire(self, reason: ServerCloseReason) -> None:
        """End the connection for `reason`, counted as closed by the server.

        Nothing queued is worth waiting for here (the client stopped reading, or time is
        up), so the connection is aborted rather than flushed.
        """
        self._registry.close(self, reason)
        if self._transport is not None:
            self._transport.abort()


_NOTHING_LEFT = memoryview(b"")
"""`_own` once a buffer of the connection's own is due at the next read."""


class _Lent(asyncio.BufferedProtocol):
    """Stands in for an `EchoProtocol` as its transport's protocol while it reads into buffers
    the budget lends (the transport tells a buffered protocol by its class)."""

    __slots__ = ("_echo",)

    def __init__(self, echo: EchoProtocol) -> None:
        self._echo = echo

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._echo.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._echo.buffer_updated(nbytes)

    def pause_writing(self) -> None:
        self._echo.pause_writing()

    def resume_writing(self) -> None:
        self._echo.resume_writing()

    def eof_received(self) -> None:
        self._echo.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._echo.connection_lost(exc)


class _Discard(asyncio.Protocol):
    """Takes over a finished connection: ignores input, closes on the client's EOF."""

    def __init__(self, echo: EchoProtocol) -> None:
        self._echo = echo

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._echo.connection_lost(exc)
