"""The process lifecycle: bind everything, serve echo (and a status side) on one loop, drain.

`Service` runs the data plane and, when given a `StatusSideFactory`, the status side the
composition root chose (`echostat.service` attaches the page); worker processes run it without.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping
from typing import Any

from echostat.server import __version__
from echostat.server.access_log import AccessLog
from echostat.server.config import Config, ConfigError, ListenerConfig, StatusConfig
from echostat.server.config_loading import describe_source
from echostat.server.echo_server import EchoServer
from echostat.server.registry import Registry
from echostat.server.reload import Reloader
from echostat.server.resources import ResourceError, describe_max_connections, reserve_descriptors
from echostat.server.runtime import apply_log_level
from echostat.server.sockets import (
    STATUS_BACKLOG,
    bind,
    bind_udp,
    check_inherited_status,
    served_host,
    url_host,
)
from echostat.server.status_side import StatusSideFactory
from echostat.server.tcp_info import TCP_INFO
from echostat.server.udp import UDPEchoServer
from echostat.server.wording import count_of, was_were

log = logging.getLogger(__name__)


class Service:
    """Echo listeners and, if `status_side` is given, a status side, on the running loop.

    `inherited` maps listener names (and ``status``) to already-bound listening sockets, from
    systemd socket activation or a supervisor; everything else is bound from the config.
    `built_in_defaults` says that `config` came from no file, for the startup line.
    """

    def __init__(
        self,
        config: Config,
        inherited: Mapping[str, list[socket.socket]] | None = None,
        status_side: StatusSideFactory | None = None,
        built_in_defaults: bool = False,
    ) -> None:
        self.config = config
        self.built_in_defaults = built_in_defaults
        self.registry = Registry(tcp_info_interval_s=tcp_info_interval(config))
        self.echo = EchoServer(self.registry, config.limits)
        self.echo.save_syns(self.registry.tcp_info_interval_s is not None)
        self.udp = UDPEchoServer(config.udp)
        self.status = status_side(self.registry, config) if status_side else None
        self._inherited = dict(inherited or {})
        self._stopped = False
        self.access_log: AccessLog | None = None

    @property
    def status_port(self) -> int:
        return self.status.port if self.status else 0

    async def start(self) -> None:
        """Reserve descriptors, bind every socket and open the access log first (raising
        `ResourceError` or `ConfigError` if one can't be had, with nothing left open), then
        serve."""
        reserve_descriptors(self.config.limits.max_connections)
        bound: list[socket.socket] = []
        try:
            echo_sockets = []
            for index, listener in enumerate(self.config.listeners):
                sockets = self._listening(f"listeners[{index}]", listener.name, listener)
                bound += sockets
                echo_sockets.append((listener, sockets))
            status = self.config.status
            status_sockets = self._listening("status", "status", status) if self.status else []
            bound += status_sockets
            self._start_access_log()
        except (ConfigError, ResourceError):
            for sock in bound:
                sock.close()
            raise
        for listener, sockets in echo_sockets:
            host, port = served_host(listener.host, sockets), sockets[0].getsockname()[1]
            if listener.protocol == "udp":
                udp = self.registry.add_udp_listener(listener.name, host, port)
                await self.udp.add_sockets(sockets, udp, listener.report)
                continue
            stats = self.registry.add_listener(
                listener.name, host, port, tls=listener.tls is not None
            )
            self.echo.add_sockets(sockets, stats, listener)
        asyncio.get_running_loop().set_exception_handler(_log_loop_error)
        self.registry.accepting = True
        self.registry.ready = True
        if self.status:
            self.status.start(status_sockets)
        echo = ", ".join(
            [f"{s.name} on {url_host(s.host)}:{s.port}" for s in self.registry.listeners]
            + [f"{u.name} on {url_host(u.host)}:{u.port}/udp" for u in self.registry.udp_listeners]
        )
        page_host = url_host(served_host(status.host, status_sockets))
        page = f"; status page on http://{page_host}:{self.status_port}/"
        log.info(
            "echostat %s (pid %d) echoing: %s%s; %s%s",
            __version__,
            os.getpid(),
            echo,
            page if self.status else "",
            describe_max_connections(self.config),
            describe_source(self.built_in_defaults),
        )

    def _listening(
        self, key: str, name: str, address: ListenerConfig | StatusConfig
    ) -> list[socket.socket]:
        inherited = self._inherited.pop(name, None)
        if not inherited and isinstance(address, ListenerConfig) and address.protocol == "udp":
            return bind_udp(key, address.host, address.port)
        if not inherited:
            backlog = address.backlog if isinstance(address, ListenerConfig) else STATUS_BACKLOG
            return bind(key, address.host, address.port, backlog)
        if isinstance(address, StatusConfig):
            check_inherited_status(inherited, address)
        return inherited

    def _start_access_log(self) -> None:
        """Open the access log, if enabled; SIGUSR1 reopens it (log rotation)."""
        self._use_access_log(self._access_log_for(self.config))
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, self._reopen_access_log)

    def _access_log_for(self, config: Config) -> AccessLog | None:
        """The access log `config` asks for: the open one if its settings are unchanged,
        else a new one (opening its file may raise `ResourceError`), or None when disabled."""
        if self.access_log is not None and self.access_log.config == config.access_log:
            return self.access_log
        if not config.access_log.enabled:
            return None
        return AccessLog(config.access_log, on_error=self.registry.count_access_log_error)

    def _use_access_log(self, access_log: AccessLog | None) -> None:
        """Log closes and rejections to `access_log` from now on; close the one it replaces."""
        if access_log is self.access_log:
            return
        if self.access_log is not None:
            self.access_log.close()
        self.access_log = access_log
        self.registry.on_close = access_log.closed if access_log else None
        self.echo.admission.access_log = access_log

    def _reopen_access_log(self) -> None:
        if self.access_log is not None:
            self.access_log.reopen()

    def reconfigure(self, config: Config) -> None:
        """Put `config` in force without closing anything: limits, listener TLS and PROXY
        settings, path quality, status access and shutdown timing. The caller (`Reloader`)
        has checked that no listener address changed."""
        self.config = config
        self.registry.tcp_info_interval_s = tcp_info_interval(config)
        self.echo.save_syns(self.registry.tcp_info_interval_s is not None)
        self.echo.reconfigure(config.limits, config.listeners)
        # A reload may give a listener TLS or take it away; what it reports follows.
        tls = {listener.name: listener.tls is not None for listener in config.listeners}
        for stats in self.registry.listeners:
            stats.tls = tls[stats.name]
        if self.status:
            self.status.reconfigure(config)

    def reloader(self, load: Callable[[], Config]) -> Reloader:
        """A `Reloader` that applies what `load` returns to this service and the log level."""

        def apply(config: Config) -> None:
            access_log = self._access_log_for(config)  # the one step that can fail: first
            self.reconfigure(config)
            self._use_access_log(access_log)
            apply_log_level(config)

        return Reloader(self.config, load, apply, self.registry.config_state)

    def echo_port(self, name: str) -> int:
        """The bound port of the listener called `name` (useful with port 0)."""
        ports = {s.name: s.port for s in self.registry.listeners}
        ports.update((u.name, u.port) for u in self.registry.udp_listeners)
        return ports[name]

    async def stop(self) -> None:
        """Turn /readyz to 503, keep accepting for `shutdown_delay_s`, stop accepting, give
        clients the grace period, finish the rest, stop the status side. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.registry.ready = False
        delay_s, grace_s = self.config.shutdown_delay_s, self.config.shutdown_grace_s
        if delay_s:
            log.info("shutdown requested: /readyz is 503; closing the listeners in %g s", delay_s)
            await asyncio.sleep(delay_s)
        self.registry.accepting = False
        self.echo.stop()
        self.udp.stop()
        waiting = self.registry.active
        if waiting:
            log.info(
                "shutting down: no longer accepting; waiting up to %g s for %s to close",
                grace_s,
                count_of(waiting, "open connection"),
            )
        else:
            log.info("shutting down: no longer accepting; no open connections")
        finished = await self.echo.drain(grace_s)
        asyncio.get_running_loop().remove_signal_handler(signal.SIGUSR1)
        self._use_access_log(None)
        if self.status:
            await self.status.stop()
        if finished:
            log.info(
                "stopped; %s still open after the grace period (sent EOF)",
                f"{count_of(finished, 'connection')} {was_were(finished)}",
            )
        else:
            log.info("stopped")


def tcp_info_interval(config: Config) -> float | None:
    """How often to observe each connection's TCP_INFO; None if path quality is off or the
    platform has no TCP_INFO."""
    return config.tcp_info_interval_s if config.path_quality and TCP_INFO is not None else None


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The catch-all for loop errors (e.g. a bug in one connection's callbacks, which closes
    that connection): one error record, with the exception and its traceback."""
    exc = context.get("exception")
    log.error("%s: %r", context.get("message", "unexpected error"), exc, exc_info=exc)
