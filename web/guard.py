"""Status-side connection limits: a cap on open connections, a header and an idle timeout.

Tornado's `HTTPServer` has one timer for both (``idle_connection_timeout`` becomes the
header timeout, and the read of the next request's headers starts as soon as a response is
done), so a client trickling its headers is allowed as long as an idle keep-alive one, an
hour by default. Here they are apart, as nginx's ``client_header_timeout`` and
``keepalive_timeout`` are: a connection waits at most `idle_timeout_s` for the first byte of
its next request, and has `header_timeout_s` from that byte (or from being accepted) until
the headers are complete. After that, a request runs as long as its handler does (a push
stream runs for hours); a request body has the header timeout from the end of its headers.
Beyond `max_connections`, a new connection is answered 503 and closed at once, without
reading its request. Tornado's own timers are set never to fire first, so every timeout comes
from the limits a connection was accepted under, and a reload changes them for later ones.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import typing
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.web import Application

from echostat.server.accept import RateLimitedLog
from echostat.server.config import StatusConfig
from echostat.web.counters import StatusCloseReason, StatusCounters

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
    body = json.dumps(
        {
            "error": f"too many status connections (status.max_connections is"
            f" {max_connections}); try again shortly"
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
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
        self._refusal = refusal(limits.max_connections)
        self._refusals = RateLimitedLog(log, interval_s=10.0)

    def reconfigure(self, limits: StatusConfig) -> None:
        """Limits for the connections accepted from now on (a reload); open ones keep the
        timeouts they started with."""
        self.limits = limits
        self._refusal = refusal(limits.max_connections)

    def accept(self, connection: socket.socket, address: Any) -> None:
        """Serve `connection`, or answer 503 and close it when the cap is reached."""
        counters = self.counters
        if counters.active >= self.limits.max_connections:
            _send_and_close(connection, self._refusal)
            counters.rejected["max_connections"] += 1
            self._refusals.warning(
                "status: refused %s: status.max_connections (%d) reached",
                address[0],
                self.limits.max_connections,
            )
            return
        counters.active += 1
        counters.accepted += 1
        stream = _GuardedStream(connection, self.limits, counters)
        stream.await_part()
        self.handle_stream(stream, address)

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        """Called when a connection starts reading a request: its first, or the next one."""
        stream = typing.cast(_GuardedStream, typing.cast(HTTP1ServerConnection, server_conn).stream)
        if stream.requests:
            stream.await_request()
        stream.requests += 1
        delegate = super().start_request(server_conn, request_conn)
        return _HeadersSeen(delegate, stream)


class _GuardedStream(IOStream):
    """A status connection's stream with the one timer that applies to it now, if any."""

    def __init__(
        self, connection: socket.socket, limits: StatusConfig, counters: StatusCounters
    ) -> None:
        super().__init__(connection)
        self.requests = 0
        self._limits = limits
        self._counters = counters
        self._idle = False
        self._timer: asyncio.TimerHandle | None = None

    def await_part(self) -> None:
        """From now, the next part of the request (its headers, then its body: only /login
        has one) must be complete within the header timeout."""
        self._idle = False
        self._arm(self._limits.header_timeout_s, "header_timeout")

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

    def close_fd(self) -> None:
        self._disarm()
        self._counters.active -= 1
        super().close_fd()

    def _arm(self, delay_s: float, reason: StatusCloseReason) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._expire, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: StatusCloseReason) -> None:
        self._timer = None
        if not self.closed():
            self._counters.closed_by_server[reason] += 1
            log.debug("status: closing a connection: %s", reason)
            self.close()


class _HeadersSeen(httputil.HTTPMessageDelegate):
    """Passes a request through to `delegate`, telling the stream when its headers are in
    and when the whole request (with its body) has been read."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, stream: _GuardedStream) -> None:
        self._delegate = delegate
        self._stream = stream

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> typing.Awaitable[None] | None:
        self._stream.await_part()
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> typing.Awaitable[None] | None:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._stream.request_read()
        self._delegate.finish()

    def on_connection_close(self) -> None:
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
