"""The status side with the watcher attached: the page and API over the stats source, and the
rounds of the ``watch`` section on the same loop, started, reloaded and stopped together.

The one place that joins the probe's watcher (`echostat.probe.watch`) and the status side
(`echostat.web`): whichever process serves the status page watches, so with workers the
supervisor watches once for the whole fleet and the workers never do.
"""

from __future__ import annotations

import socket

from echostat.probe.watch import Watcher, WatchTarget
from echostat.server.config import Config
from echostat.server.registry import StatsSource
from echostat.web.status import StatusSide


def watch_targets(config: Config) -> list[WatchTarget]:
    """The ``watch.targets`` of `config`, parsed (validation has checked each one)."""
    return [
        WatchTarget.parse(
            target.name,
            target.target,
            target.interval_s,
            target.count,
            target.size,
            target.timeout_s,
        )
        for target in config.watch.targets
    ]


class WatchingStatusSide(StatusSide):
    """`StatusSide` plus a `Watcher` of ``watch.targets``; a reload swaps the targets."""

    def __init__(self, source: StatsSource, config: Config) -> None:
        self.watcher = Watcher(watch_targets(config), config.watch.max_targets)
        super().__init__(source, config, self.watcher)

    def start(self, sockets: list[socket.socket]) -> None:
        super().start(sockets)
        self.watcher.start()

    def reconfigure(self, config: Config) -> None:
        super().reconfigure(config)
        self.watcher.reconfigure(watch_targets(config), config.watch.max_targets)

    async def stop(self) -> None:
        await self.watcher.stop()
        await super().stop()
