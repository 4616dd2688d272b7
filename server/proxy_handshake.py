"""The PROXY protocol handshake of a connection: read the header, then hand over to the echo."""

from __future__ import annotations

import asyncio
import logging
import typing

from echostat.server.admission import Admission
from echostat.server.echo import EchoProtocol
from echostat.server.proxy_protocol import Endpoint, ProxyHeaderParser, ProxyProtocolError
from echostat.server.registry import RejectReason

log = logging.getLogger(__name__)


class ProxyHeaderProtocol(asyncio.Protocol):
    """Reads a PROXY protocol header, then hands the connection to its `EchoProtocol`.

    The echo protocol is registered only once the header names the real client, under
    that client's address, with the balancer's as `via`; a missing, malformed or slow
    header closes the connection and counts it as rejected instead. The connection counts
    with `admission` as awaiting its header from construction until its fate is settled.
    """

    def __init__(self, echo: EchoProtocol, admission: Admission, timeout_s: float) -> None:
        self._echo = echo
        self._admission = admission
        self._timeout_s = timeout_s
        self._parser = ProxyHeaderParser()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._outcome: str | None = None
        admission.header_started()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout_s, self._fail, "proxy_header_timeout")

    def data_received(self, data: bytes) -> None:
        try:
            result = self._parser.feed(data)
        except ProxyProtocolError as exc:
            log.debug("connection from %s: bad PROXY header: %s", self._echo.peer, exc.reason)
            self._fail("proxy_header_invalid", exc.reason)
            return
        if result is not None:
            self._hand_over(result.source, result.remainder)

    def eof_received(self) -> None:
        self._fail("proxy_header_invalid", "closed before the header was complete")

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("proxy_header_invalid", "connection lost before the header was complete")

    def _hand_over(self, source: Endpoint | None, remainder: bytes) -> None:
        echo, transport = self._echo, self._transport
        assert transport is not None
        if source is not None:
            echo.via = echo.peer
            echo.ip, echo.port = source
        if self._admission.over_ip_limit(echo.ip):
            self._fail("max_connections_per_ip")
            return
        self._settle("registered")
        self._admission.registry.open(echo)
        transport.set_protocol(echo)
        echo.connection_made(transport)
        if remainder:
            echo.data_received(remainder)  # arrived before the echo took the connection over

    def _fail(self, reason: RejectReason, detail: str | None = None) -> None:
        """Reject the connection for `reason` (what was wrong: `detail`), unless its fate is
        already settled."""
        if self._settle(reason):
            echo = self._echo
            self._admission.reject(reason, echo.peer, echo.listener.name, detail, echo.via)
            if self._transport is not None:
                self._transport.abort()

    def _settle(self, outcome: str) -> bool:
        """Record the first outcome only; True if this call was it."""
        if self._outcome is not None:
            return False
        self._outcome = outcome
        self._admission.header_settled()
        if self._timer is not None:
            self._timer.cancel()
        return True
