"""The status side's lifecycle: the web application over a stats source, on the running loop."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from tornado.httpserver import HTTPServer

from server.accept import watch_accepts
from server.config import Config
from server.stats import StatsSource
from web.app import make_app, reconfigure_app
from web.feed import StatsFeed


class StatusServer(HTTPServer):
    """Tornado's HTTP server with the accept loop that survives descriptor exhaustion.

    When echo clients use up the descriptors, the status page must keep answering once
    some free up, rather than spin in Tornado's accept handler.
    """

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            # _handle_connection is TCPServer's per-connection entry point (wraps TLS, then
            # calls handle_stream); only the accept loop around it is replaced.
            self._handlers[sock.fileno()] = watch_accepts(sock, self._handle_connection, "status")


class StatusSide:
    """The page, API and push feed for `source`: `start` on bound sockets, `stop` once."""

    def __init__(self, source: StatsSource, config: Config) -> None:
        self.feed = StatsFeed(source)
        self.app = make_app(source, config, self.feed)
        self.http = StatusServer(self.app)
        self.port = 0

    def start(self, sockets: list[socket.socket]) -> None:
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self.feed.start()

    def reconfigure(self, config: Config) -> None:
        """Serve later requests under `config` (token, allowed hosts, open paths, limits)."""
        reconfigure_app(self.app, config)

    async def stop(self) -> None:
        """Stop the feed (ending every push stream), then the server and its connections."""
        self.feed.stop()
        self.http.stop()
        await self.http.close_all_connections()


def url_host(host: str) -> str:
    """`host` as it goes in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host else host
