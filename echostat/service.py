"""The service the ``echostat`` command runs: the data plane with the status page attached.

The one place that joins `echostat.server` and `echostat.web`: the data plane takes the
status side as a factory (`echostat.server.status_side`) and never imports the page.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping

from echostat.server import service
from echostat.server.config import Config
from echostat.server.signals import catch_reload_signal, catch_stop_signals, restore_stop_signals
from echostat.watching import WatchingStatusSide


class Service(service.Service):
    """Echo listeners and the status page on the running loop (see `server.service.Service`)."""

    status: WatchingStatusSide

    def __init__(
        self,
        config: Config,
        inherited: Mapping[str, list[socket.socket]] | None = None,
        built_in_defaults: bool = False,
    ) -> None:
        super().__init__(
            config, inherited, status_side=WatchingStatusSide, built_in_defaults=built_in_defaults
        )


async def serve(
    config: Config,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
    inherited: Mapping[str, list[socket.socket]] | None = None,
    load: Callable[[], Config] | None = None,
    built_in_defaults: bool = False,
) -> None:
    """Run until `shutdown_trigger` returns, or until SIGTERM/SIGINT when none is given.

    With signals, a second SIGTERM/SIGINT during the drain exits at once with status 1, and
    SIGHUP reloads the config that `load` reads again (see `echostat.server.reload`).
    `built_in_defaults` says that `config` came from no file, for the startup line.
    """
    running = Service(config, inherited, built_in_defaults)
    if shutdown_trigger is None:
        shutdown_trigger = catch_stop_signals().wait
        own_signals = True
        if load is not None:
            catch_reload_signal(running.reloader(load).reload)
    else:
        own_signals = False
    try:
        await running.start()
        await shutdown_trigger()
        await running.stop()
    finally:
        if own_signals:
            restore_stop_signals()
