"""Status-side connection limits: caps on open connections, header and idle timeouts, a
buffer budget.

Tornado's `HTTPServer` has one timer for both (``idle_connection_timeout`` becomes the
header timeout, and the read of the next request's headers starts as soon as a response is
done), so a client trickling its headers is allowed as long as an idle keep-alive one, an
hour by default. Here they are apart, as nginx's ``client_header_timeout`` and
``keepalive_timeout`` are: a connection waits at most `idle_timeout_s` for the first byte of
its next request, and has `header_timeout_s` from that byte (or from being accepted) until
the headers are complete. After that, a request runs as long as its handler does (a push
stream runs for hours); a request body has the header timeout from the end of its headers.
Beyond `max_connections` (or `max_connections_per_ip` from its address), a new connection
takes a reserved seat if one is free (see `echostat.web.seats`): it is served one request if
that asks for a health path, else answered 503 naming the cap; with the reserve full too, it
is answered 503 and closed at once, without reading its request. Bytes queued for status
clients (what the kernel doesn't take at once) count against `max_buffered_bytes`: beyond
it, the client waiting longest with bytes queued is closed, and counted. Tornado's own timers are
set never to fire first, so every timeout comes from the limits a connection was accepted
under, and a reload changes them for later ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import typing
from asyncio import Future
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.web import Application

from echostat.server.config import StatusConfig
from echostat.web.access import SECURITY_HEADERS
from echostat.web.counters import StatusCloseReason, StatusCounters
from echostat.web.seats import (
    HEALTH_PATHS,
    RESERVED_HEADER_TIMEOUT_S,
    Refusal,
    Seats,
    limit_of,
    refusal_message,
)

log = logging.getLogger(__name__)


def _largest_accepted_s(key: str) -> float:
    """The largest value config validation accepts for ``status.<key>``."""
    (found,) = (f for f in dataclasses.fields(StatusConfig) if f.name == key)
    return float(found.metadata["range"][1])


_TORNADO_HEADER_TIMEOUT_S = (
    _largest_accepted_s("idle_timeout_s") + _largest_accepted_s("header_timeout_s") + 60.0
)
"""Longer than any idle wait plus header timeout the config allows: Tornado's header timer
is a backstop that never fires before ours."""


def refusal(max_connections: int) -> bytes:
    """The whole response a connection beyond the cap gets: 503, a JSON reason, close."""
    return refusal_response(refusal_message("max_connections", max_connections))


def refusal_response(message: str) -> bytes:
    """A whole 503 response with ``{"error": message}``, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Retry-After: 1\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS)
        + "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedHTTPServer(HTTPServer):
    """An `HTTPServer` that enforces `StatusConfig`'s connection limits, counting in `counters`.

    Connections come in through `accept`, from an accept loop of the caller's.
    """

    def initialize(  # type: ignore[override]
        self, app: Application, limits: StatusConfig, counters: StatusCounters
    ) -> None:
        """Tornado's `HTTPServer` is `Configurable`: the constructor's arguments come here."""
        # Tornado times the wait for a request's headers from the end of the previous response;
        # by then one of our timers runs, and a reload can't move this bound past them.
        super().initialize(app, idle_connection_timeout=_TORNADO_HEADER_TIMEOUT_S)
        self.limits = limits
        self.counters = counters
        self.seats = Seats(limits, counters)

    def reconfigure(self, limits: StatusConfig) -> None:
        """Limits for the connections accepted from now on (a reload); open ones keep the
        timeouts they started with, and all share the new buffer budget."""
        self.limits = limits
        self.seats.limits = limits

    def accept(self, connection: socket.socket, address: Any) -> None:
        """Serve `connection`; beyond a cap, in a reserved seat for a health check, or
        answer 503 and close it when the reserve is full too."""
        ip = str(address[0])
        over = self.seats.over_cap(ip)
        if over is not None and not self.seats.reserve_free(ip):
            _send_and_close(
                connection, refusal_response(refusal_message(over, limit_of(over, self.limits)))
            )
            self.seats.refuse(over, ip)
            return
        self.seats.take(ip, reserved=over is not None)
        stream = _GuardedStream(connection, self.limits, self.seats, ip, over)
        stream.await_part()
        self.handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        """Called when a connection starts reading a request: its first, or the next one."""
        stream = typing.cast(_GuardedStream, typing.cast(HTTP1ServerConnection, server_conn).stream)
        if stream.requests:
            if stream.over is not None:
                stream.close()  # a reserved seat serves one request
            stream.await_request()
        stream.requests += 1
        delegate = super().start_request(server_conn, request_conn)
        return _HeadersSeen(delegate, stream)


class _GuardedStream(IOStream):
    """A status connection's stream with the one timer that applies to it now, if any."""

    def __init__(
        self,
        connection: socket.socket,
        limits: StatusConfig,
        seats: Seats,
        ip: str,
        over: Refusal | None,
    ) -> None:
        super().__init__(connection)
        self.requests = 0
        self.over = over
        """The cap this connection met, in a reserved seat; None in a regular one."""
        self.requests_seen = False
        """Whether the headers of a request have arrived."""
        self._limits = limits
        self._seats = seats
        self._counters = seats.counters
        self.ip = ip
        self._queued = 0
        self._idle = False
        self._timer: asyncio.TimerHandle | None = None
        self._header_timeout_s = (
            limits.header_timeout_s
            if over is None
            else min(limits.header_timeout_s, RESERVED_HEADER_TIMEOUT_S)
        )

    def await_part(self) -> None:
        """From now, the next part of the request (its headers, then its body: only /login
        has one) must be complete within the header timeout."""
        self._idle = False
        self._arm(self._header_timeout_s, "header_timeout")

    def await_request(self) -> None:
        """Keep-alive: wait up to the idle timeout for the first byte of the next request."""
        self._idle = True
        self._arm(self._limits.idle_timeout_s, "idle_timeout")

    def request_read(self) -> None:
        """The request runs now; no timer applies until its response is done."""
        self._disarm()

    def read_from_fd(self, buf: bytearray | memoryview) -> int | None:
        count = super().read_from_fd(buf)
        if count and self._idle:
            self.await_part()
        return count

    def write(self, data: bytes | memoryview) -> Future[None]:
        """Send `data`, queueing what the kernel doesn't take at once; then, while the bytes
        queued for status clients exceed `status.max_buffered_bytes`, the connection waiting
        longest is closed (this one too, if it comes to that: the future then fails as for
        any closed connection)."""
        if self.closed():
            return super().write(data)  # raises StreamClosedError, as for any closed stream
        self._queue(len(data))
        written = super().write(data)  # write_to_fd takes back what the kernel took
        self._seats.enforce_budget()
        return written

    def write_to_fd(self, data: memoryview) -> int:
        written = super().write_to_fd(data)
        self._queue(-written)
        return written

    def close_fd(self) -> None:
        self._disarm()
        self._queue(-self._queued)
        self._seats.release(self.ip, reserved=self.over is not None)
        super().close_fd()

    def _queue(self, size: int) -> None:
        before, self._queued = self._queued, self._queued + size
        self._seats.queued(self, before, self._queued)

    def _arm(self, delay_s: float, reason: StatusCloseReason) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._expire, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def serve_health_check(self) -> None:
        """A reserved seat's health request is answered: the connection counts as accepted
        from now, as a regular one does when it takes its seat."""
        self._counters.accepted += 1

    def refuse(self) -> None:
        """Answer a reserved seat with the 503 naming the cap its connection met, as a
        connection refused at once is answered, and close it."""
        assert self.over is not None
        self._seats.refuse(self.over, self.ip)
        message = refusal_message(self.over, limit_of(self.over, self._limits))
        self.write(refusal_response(message)).add_done_callback(lambda _: self.close())

    def _expire(self, reason: StatusCloseReason) -> None:
        self._timer = None
        if self.closed():
            return
        if self.over is not None and not self.requests_seen:
            self.refuse()  # beyond a cap and no request: refused, as it would have been at once
            return
        self._counters.closed_by_server[reason] += 1
        log.debug("status: closing a connection: %s", reason)
        self.close()


class _HeadersSeen(httputil.HTTPMessageDelegate):
    """Passes a request through to `delegate`, telling the stream when its headers are in
    and when the whole request (with its body) has been read."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, stream: _GuardedStream) -> None:
        self._delegate = delegate
        self._stream = stream
        self._refused = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> typing.Awaitable[None] | None:
        over = self._stream.over
        path = typing.cast(httputil.RequestStartLine, start_line).path.partition("?")[0]
        self._stream.requests_seen = True
        if over is not None:
            if path not in HEALTH_PATHS:
                self._refused = True
                self._stream.refuse()
                return None
            self._stream.serve_health_check()
        self._stream.await_part()
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> typing.Awaitable[None] | None:
        if self._refused:
            return None
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._stream.request_read()
        if not self._refused:
            self._delegate.finish()

    def on_connection_close(self) -> None:
        if not self._refused:
            self._delegate.on_connection_close()


def _send_and_close(connection: socket.socket, response: bytes) -> None:
    """Send `response` if the socket takes it now, then close, never waiting.

    Whatever the client already sent is read first: closing a socket with unread input sends
    a reset, which can overtake the response.
    """
    connection.setblocking(False)
    try:
        connection.recv(65536)
    except OSError:
        pass  # nothing sent yet (EAGAIN) or already gone
    try:
        connection.send(response)
    except OSError:
        pass  # the client is gone or its window is closed; the close tells it enough
    connection.close()
