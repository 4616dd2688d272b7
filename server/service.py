"""The process lifecycle: bind everything, serve echo and status on one loop, drain, stop.

`Service` is the piece tests drive directly; `serve` wraps it for the command line, mapping
SIGTERM/SIGINT to a graceful shutdown and a second signal to an immediate exit.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from server import __version__
from server.config import Config, ConfigError
from server.echo import EchoServer
from server.stats import Registry
from web.app import make_app
from web.feed import StatsFeed

log = logging.getLogger(__name__)


class Service:
    """Echo listeners and the status page, sharing one registry on the running loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = Registry()
        self.echo = EchoServer(self.registry, config.limits.max_buffer_bytes)
        self.feed = StatsFeed(self.registry)
        self.http = HTTPServer(make_app(self.registry, config, self.feed))
        self.status_port = 0
        self._stopped = False

    async def start(self) -> None:
        """Bind every socket first (raising `ConfigError` if one can't be), then serve."""
        bound: list[socket.socket] = []
        try:
            echo_sockets = []
            for index, listener in enumerate(self.config.listeners):
                sockets = _bind(f"listeners[{index}]", listener.host, listener.port)
                bound += sockets
                echo_sockets.append((listener, sockets))
            status = self.config.status
            status_sockets = _bind("status", status.host, status.port)
            bound += status_sockets
        except ConfigError:
            for sock in bound:
                sock.close()
            raise
        for listener, sockets in echo_sockets:
            port = sockets[0].getsockname()[1]
            stats = self.registry.add_listener(listener.name, listener.host, port)
            self.echo.add_sockets(sockets, stats)
        self.http.add_sockets(status_sockets)
        self.status_port = status_sockets[0].getsockname()[1]
        self.feed.start()
        self.registry.accepting = True
        echo = ", ".join(f"{s.name} on {s.host}:{s.port}" for s in self.registry.listeners)
        log.info(
            "echostat %s (pid %d) echoing: %s; status page on http://%s:%d/",
            __version__,
            os.getpid(),
            echo,
            _url_host(status.host),
            self.status_port,
        )

    def echo_port(self, name: str) -> int:
        """The bound port of the listener called `name` (useful with port 0)."""
        return next(s.port for s in self.registry.listeners if s.name == name)

    async def stop(self) -> None:
        """Stop accepting, give clients the grace period, finish the rest, stop the page."""
        if self._stopped:
            return
        self._stopped = True
        self.registry.accepting = False
        self.echo.stop()
        grace_s = self.config.shutdown_grace_s
        log.info(
            "shutting down: no longer accepting; waiting up to %g s for %d open connections",
            grace_s,
            self.registry.active,
        )
        finished = await self.echo.drain(grace_s)
        self.feed.stop()
        self.http.stop()
        await self.http.close_all_connections()
        log.info("stopped; %d connections were still open after the grace period", finished)


async def serve(
    config: Config, shutdown_trigger: Callable[[], Awaitable[object]] | None = None
) -> None:
    """Run until `shutdown_trigger` returns, or until SIGTERM/SIGINT when none is given.

    With signals, a second SIGTERM/SIGINT during the drain exits at once with status 1.
    """
    service = Service(config)
    own_signals = shutdown_trigger is None
    if shutdown_trigger is None:
        # Handlers go in before start() logs readiness, so a signal sent right after it drains.
        shutdown_trigger = _catch_signals().wait
    try:
        await service.start()
        await shutdown_trigger()
        await service.stop()
    finally:
        if own_signals:
            _restore_signals()


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _catch_signals() -> asyncio.Event:
    """Map SIGTERM/SIGINT to the returned event; a second one exits the process at once."""
    loop = asyncio.get_running_loop()
    received = asyncio.Event()

    def on_signal(signum: int) -> None:
        if received.is_set():
            log.warning("%s again: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(1)
        received.set()

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    return received


def _restore_signals() -> None:
    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.remove_signal_handler(signum)


def _bind(key: str, host: str, port: int) -> list[socket.socket]:
    """`bind_sockets`, with failures turned into a `ConfigError` that names the config key."""
    try:
        return bind_sockets(port, host)
    except socket.gaierror as exc:
        raise ConfigError(f"{key}.host: cannot resolve {host!r}: {exc.strerror}") from None
    except OSError as exc:
        hint = {
            errno.EADDRINUSE: " (another process uses it; pick another port, or 0 for any)",
            errno.EACCES: " (ports below 1024 need privileges; pick a higher port)",
            errno.EADDRNOTAVAIL: " (this host has no such address)",
        }.get(exc.errno or 0, "")
        raise ConfigError(
            f"{key}.port: cannot listen on {host}:{port}: {exc.strerror}{hint}"
        ) from None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
