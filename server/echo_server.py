"""The TCP echo server: `EchoServer` accepts connections and gives each its `EchoProtocol`.

`EchoServer` is a Tornado `TCPServer` that keeps Tornado's binding and lifecycle but runs its
own accept loop (so it can count and register each connection before anything is scheduled,
and back off instead of spinning when the process runs out of file descriptors) and hands
every accepted socket to an asyncio transport on the same loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Iterable
from typing import Any

from tornado.ioloop import PeriodicCallback
from tornado.tcpserver import TCPServer

from echostat.server.admission import Admission, ListenerRules
from echostat.server.borrowed import adopt
from echostat.server.budget import BufferBudget
from echostat.server.config import LimitsConfig, ListenerConfig
from echostat.server.echo import EchoProtocol
from echostat.server.listeners import Listeners
from echostat.server.proxy_handshake import ProxyHeaderProtocol
from echostat.server.registry import ListenerStats, Registry, ServerCloseReason, peer_name
from echostat.server.report import ReportingEchoProtocol
from echostat.server.syn import SAVED_SYN_BYTES, TCP_SAVE_SYN, TCP_SAVED_SYN

log = logging.getLogger(__name__)

_HOUSEKEEPING_S = 1.0
"""How often idle times are refreshed and time limits enforced."""

_EOF_LINGER_S = 2.0
"""After sending EOF at shutdown, how long a connection may stay open for its client's EOF."""


class EchoServer(TCPServer):
    """Echoes every byte back on the connection it came from, counting it in a `Registry`.

    Use `add_sockets` with sockets from `tornado.netutil.bind_sockets`; `stop` stops
    accepting and closes them; `drain` then ends the open connections gracefully. New
    connections pass `admission` first.
    """

    def __init__(self, registry: Registry, limits: LimitsConfig) -> None:
        super().__init__()
        self.registry = registry
        self.admission = Admission(registry, limits)
        self._rules: dict[str, ListenerRules] = {}
        """Settings of each listener by name; `reconfigure` replaces them for new clients."""
        self._listeners = Listeners()
        self.budget = BufferBudget(limits.max_buffered_bytes)
        self.budget.on_lending = self._lending_changed
        registry.budget = self.budget
        self._handshakes: dict[EchoProtocol, asyncio.Task[Any]] = {}
        """TLS handshakes under way, by connection: ending one early cancels its handshake."""
        self._housekeeping = PeriodicCallback(self._expire_connections, _HOUSEKEEPING_S * 1000)
        self._save_syn = False
        """Listening sockets keep each SYN, read once per accepted connection (path quality)."""

    def add_sockets(
        self,
        sockets: Iterable[socket.socket],
        stats: ListenerStats | None = None,
        config: ListenerConfig | None = None,
    ) -> None:
        """Start accepting on `sockets`, counting their connections under `stats`, with the
        TLS and PROXY protocol settings of `config`.

        Without `stats`, the sockets are counted under one listener registered with the first
        socket's address and the name in `config` (a plain listener named ``main`` without it).
        """
        config = config or ListenerConfig()
        rules = ListenerRules.of(config)
        # Asking for the running loop costs a getpid() call each time: pass it along instead.
        loop = asyncio.get_running_loop()
        for sock in sockets:
            if stats is None:
                host, port = sock.getsockname()[:2]
                stats = self.registry.add_listener(config.name, host, port)
            self._rules[stats.name] = rules
            _keep_syns(sock, self._save_syn)
            on_accept = functools.partial(self._start_connection, loop, stats)
            self._listeners.add(sock, on_accept, stats.name)
        if not self._housekeeping.is_running():
            self._housekeeping.start()

    def save_syns(self, on: bool) -> None:
        """Keep (or stop keeping) the headers of every SYN from now on, on every listener:
        connections then carry their SYN as it arrived (`Connection.syn`)."""
        self._save_syn = on
        for sock in self._listeners.sockets():
            _keep_syns(sock, on)

    def stop(self) -> None:
        """Stop accepting and close the listening sockets; open connections stay; safe to
        call twice."""
        self._listeners.stop()
        super().stop()

    def reconfigure(self, limits: LimitsConfig, listeners: Iterable[ListenerConfig]) -> None:
        """New limits and listener settings (TLS context, PROXY rules) for clients from now
        on; open connections keep theirs, while time limits apply to them at the next check
        and the process-wide buffer budget to every connection's next read."""
        self.admission.limits = limits
        self.budget.resize(limits.max_buffered_bytes)
        for listener in listeners:
            self._rules[listener.name] = ListenerRules.of(listener)

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for clients to close, then finish the rest; return how many."""
        await self._wait_for_no_connections(grace_s)
        remaining = list(self.registry.active_connections())
        for conn in remaining:
            if isinstance(conn, EchoProtocol):
                conn.finish()
        await self._wait_for_no_connections(_EOF_LINGER_S)
        for conn in list(self.registry.active_connections()):
            if isinstance(conn, EchoProtocol):
                self._expire(conn, "shutdown")
        self._housekeeping.stop()
        return len(remaining)

    async def _wait_for_no_connections(self, timeout_s: float) -> None:
        if not self.registry.active:
            return
        all_closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_last_close() -> None:
            if not all_closed.done():
                all_closed.set_result(None)

        self.registry.on_last_close = on_last_close
        try:
            await asyncio.wait_for(all_closed, timeout_s)
        except TimeoutError:
            pass
        finally:
            self.registry.on_last_close = None

    def _start_connection(
        self,
        loop: asyncio.AbstractEventLoop,
        stats: ListenerStats,
        connection: socket.socket,
        address: Any,
    ) -> None:
        ip, port = address[0], address[1]
        rules = self._rules[stats.name]
        admission = self.admission
        reason = admission.refusal(ip, connection.fileno(), rules)
        if reason is not None:
            connection.close()
            admission.reject(reason, peer_name(ip, port), stats.name)
            return
        max_buffer_bytes = admission.limits.max_buffer_bytes
        config = rules.config
        echo = (ReportingEchoProtocol if config.report else EchoProtocol)(
            ip, port, stats, self.registry, self.budget, max_buffer_bytes, connection
        )
        if self._save_syn:
            # Once, now: the kernel frees the saved headers on this read (decoded on demand).
            try:
                echo.saved_syn = connection.getsockopt(
                    socket.IPPROTO_TCP, TCP_SAVED_SYN, SAVED_SYN_BYTES
                )
            except OSError:  # a kernel without saved SYNs, or one too long: none to show
                pass
        protocol: asyncio.BaseProtocol = echo
        if config.proxy_protocol:
            protocol = ProxyHeaderProtocol(echo, admission, config.proxy_header_timeout_s)
        else:
            self.registry.open(echo)
        tls = config.tls
        if tls is None:
            setup = loop.connect_accepted_socket(lambda: protocol, connection)
            adopt(setup, functools.partial(self._setup_failed, echo, connection))
            return
        # A handshake takes long enough to be worth a task, which shutdown can cancel.
        handshake = loop.create_task(
            loop.connect_accepted_socket(
                lambda: protocol,
                connection,
                ssl=tls.context,
                ssl_handshake_timeout=tls.handshake_timeout_s,
            )
        )
        self._handshakes[echo] = handshake
        handshake.add_done_callback(lambda task: self._handshake_done(task, echo, connection))

    def _handshake_done(
        self, task: asyncio.Task[Any], protocol: EchoProtocol, connection: socket.socket
    ) -> None:
        self._handshakes.pop(protocol, None)
        if task.cancelled():
            self._setup_failed(protocol, connection, asyncio.CancelledError())
        elif (error := task.exception()) is not None:
            self._setup_failed(protocol, connection, error)

    def _setup_failed(
        self, protocol: EchoProtocol, connection: socket.socket, error: BaseException
    ) -> None:
        """Clean up a connection whose transport never came up (e.g. a failed TLS handshake)."""
        log.debug("connection from %s failed in setup: %r", protocol.peer, error)
        connection.close()
        self.registry.close(protocol, "setup_failed")

    def _lending_changed(self, lending: bool) -> None:
        """The budget is nearly spent (or has room again): every connection reads into the
        buffers it lends (or into the loop's own again)."""
        for conn in self.registry.active_connections():
            if isinstance(conn, EchoProtocol):
                conn.lend(lending)

    def _expire_connections(self) -> None:
        """Once a second: refresh idle times, then end connections past a time limit."""
        self.registry.sweep()
        limits = self.admission.limits
        if not (limits.idle_timeout_s or limits.max_lifetime_s):
            return
        now = self.registry.clock()
        for conn in list(self.registry.active_connections()):
            if not isinstance(conn, EchoProtocol):
                continue
            if limits.idle_timeout_s and now - conn.last_activity >= limits.idle_timeout_s:
                self._expire(conn, "idle_timeout")
            elif limits.max_lifetime_s and now - conn.opened_monotonic >= limits.max_lifetime_s:
                self._expire(conn, "max_lifetime")

    def _expire(self, conn: EchoProtocol, reason: ServerCloseReason) -> None:
        """End `conn` for `reason`; one still in its TLS handshake has no transport to abort,
        so the handshake is cancelled, which closes its socket."""
        conn.expire(reason)
        handshake = self._handshakes.pop(conn, None)
        if handshake is not None:
            handshake.cancel()


def _keep_syns(sock: socket.socket, on: bool) -> None:
    """Ask the kernel to save (or stop saving) the headers of SYNs arriving at `sock`."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_SAVE_SYN, int(on))
        except OSError:  # not Linux 4.2+: connections simply have no SYN to show
            log.debug("cannot save SYNs on %s", sock.getsockname())
