"""The status side's lifecycle: the web application over a stats source, on the running loop."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from tornado.web import Application

from echostat.server.config import Config, StatusConfig
from echostat.server.listeners import Listeners
from echostat.server.registry import StatsSource
from echostat.web.app import make_app, make_state
from echostat.web.counters import StatusCounters
from echostat.web.feed import StatsFeed
from echostat.web.guard import GuardedHTTPServer
from echostat.web.watch import WatchSource


class StatusServer(GuardedHTTPServer):
    """The guarded HTTP server with the accept loop that survives descriptor exhaustion.

    When the process runs out of descriptors, the status page must keep answering once
    some free up, rather than spin in Tornado's accept handler.
    """

    def initialize(  # type: ignore[override]
        self, app: Application, limits: StatusConfig, counters: StatusCounters
    ) -> None:
        """Tornado's `HTTPServer` is `Configurable`: its state is created here."""
        super().initialize(app, limits, counters)
        self._listeners = Listeners()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._listeners.add(sock, self.accept, "status")

    def stop(self) -> None:
        """Stop accepting and close the listening sockets; safe to call twice."""
        self._listeners.stop()
        super().stop()


class StatusSide:
    """The page, API and push feed for `source`: `start` on bound sockets, `stop` once."""

    def __init__(
        self, source: StatsSource, config: Config, watch: WatchSource | None = None
    ) -> None:
        self.feed = StatsFeed(source, watch=watch)
        self.counters = StatusCounters()
        self.state = make_state(source, config, self.feed, self.counters, watch)
        self.http = StatusServer(make_app(self.state), config.status, self.counters)
        self.port = 0

    def start(self, sockets: list[socket.socket]) -> None:
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self.feed.start()

    def reconfigure(self, config: Config) -> None:
        """Serve later requests and connections under `config`: token, allowed hosts, open
        paths, the limits shown, and the status side's own connection limits."""
        self.state.reconfigure(config)
        self.http.reconfigure(config.status)

    async def stop(self) -> None:
        """Stop the feed (ending every push stream), then the server and its connections."""
        self.feed.stop()
        self.http.stop()
        await self.http.close_all_connections()
