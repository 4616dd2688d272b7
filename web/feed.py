"""The push channel's source: one message per tick, shared by every open page.

However many dashboards are open, each tick takes one snapshot, computes rates and the
connection table, and encodes the result once; every subscriber then writes the same bytes,
so viewers cost the echo path next to nothing.
"""

from __future__ import annotations

import asyncio
import json

from tornado.ioloop import PeriodicCallback

from echostat.server.registry import StatsSource
from echostat.web.history import History, Rates
from echostat.web.schema import connections_document, peers_document, stats_document
from echostat.web.watch import WatchSource, watch_document

HISTORY_POINTS = 300
"""Ticks kept for the charts: five minutes at one tick a second."""

TABLE_ROWS = 100
"""Connections listed in each pushed message, most bytes moved first."""


class StatsFeed:
    """Publishes ``(tick, json_bytes)`` about every `interval_s`; `next` waits for a newer one.

    Each message is the stats document plus ``top_connections``; `history_message` holds
    the recent points for a page that has just connected.
    """

    def __init__(
        self, registry: StatsSource, interval_s: float = 1.0, watch: WatchSource | None = None
    ) -> None:
        self._registry = registry
        self._watch = watch
        self._history = History(HISTORY_POINTS)
        self._tick = 0
        self._message = b""
        self._history_message = b""
        self._history_tick = -1
        self._published = asyncio.Event()
        self._closed = False
        self._timer = PeriodicCallback(self.publish, interval_s * 1000)

    def start(self) -> None:
        self.publish()
        self._timer.start()

    def stop(self) -> None:
        """Stop ticking and release every waiting subscriber; safe to call twice."""
        self._timer.stop()
        self._closed = True
        self._published.set()

    @property
    def rates(self) -> Rates:
        """Rates between the last two ticks."""
        return self._history.rates

    def publish(self) -> None:
        """Take one snapshot, derive rates and the table, encode once, wake every subscriber."""
        snap = self._registry.snapshot()
        rates = self._history.add(snap)
        table = connections_document(snap.active, self._registry.connections(TABLE_ROWS))
        document = {**stats_document(snap, rates), "top_connections": table}
        if snap.udp_listeners:
            peers = self._registry.peers(TABLE_ROWS)
            total = sum(udp.peers for udp in snap.udp_listeners)
            document["top_peers"] = peers_document(total, peers)
        if self._watch is not None and (targets := self._watch.targets()):
            document["watch"] = watch_document(targets, history=False)
        self._message = json.dumps(document).encode()
        self._tick += 1
        published, self._published = self._published, asyncio.Event()
        published.set()

    def history_message(self) -> bytes:
        """The history document as JSON, encoded at most once per tick."""
        if self._history_tick != self._tick:
            self._history_message = json.dumps(self._history.document()).encode()
            self._history_tick = self._tick
        return self._history_message

    async def next(self, after_tick: int) -> tuple[int, bytes] | None:
        """The first message newer than `after_tick`, or None once the feed has stopped."""
        while self._tick <= after_tick and not self._closed:
            await self._published.wait()
        if self._closed:
            return None
        return self._tick, self._message
