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


class _Discard(asyncio.Protocol):
    """Takes over a finished connection: ignores input, closes on the client's EOF."""

    def __init__(self, echo: EchoProtocol) -> None:
        self._echo = echo

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self._echo.connection_lost(exc)
