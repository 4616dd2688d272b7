"""The push channel's source: one stats snapshot per tick, shared by every open page.

However many dashboards are open, each tick takes one snapshot and encodes it once; every
subscriber then writes the same bytes, so viewers cost the echo path next to nothing.
"""

from __future__ import annotations

import asyncio
import json

from tornado.ioloop import PeriodicCallback

from server.stats import StatsSource
from web.schema import stats_document


class StatsFeed:
    """Publishes ``(tick, json_bytes)`` about every `interval_s`; `next` waits for a newer one."""

    def __init__(self, registry: StatsSource, interval_s: float = 1.0) -> None:
        self._registry = registry
        self._tick = 0
        self._message = b""
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

    def publish(self) -> None:
        """Take one snapshot, encode it once and wake every subscriber."""
        self._message = json.dumps(stats_document(self._registry.snapshot())).encode()
        self._tick += 1
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def next(self, after_tick: int) -> tuple[int, bytes] | None:
        """The first message newer than `after_tick`, or None once the feed has stopped."""
        while self._tick <= after_tick and not self._closed:
            await self._published.wait()
        if self._closed:
            return None
        return self._tick, self._message
