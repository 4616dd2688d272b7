"""The live connection registry and its counters, read by the status side as snapshots.

The echo path only does integer additions on a `Connection`; everything else (totals,
idle times, per-listener figures) is computed when somebody asks. No Tornado imports, so
this module is trivially unit-testable.
"""

from __future__ import annotations

import heapq
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from echostat.server.pages import build_page, moved
from echostat.server.path_quality import TcpSampler, TcpSnapshot
from echostat.server.reload import ReloadCounters
from echostat.server.snapshots import (
    ConnectionSnapshot,
    ConnectionsPage,
    ListenerSnapshot,
    RowKey,
    RowsEncoder,
    StatsSnapshot,
    WorkerSnapshot,
)
from echostat.server.syn import SynHeaders
from echostat.server.syn import decode as decode_syn
from echostat.server.tcp_info import TcpInfo
from echostat.server.udp_stats import PeerSnapshot, UDPListenerStats, peer_snapshot

if TYPE_CHECKING:
    from echostat.server.budget import BufferBudget


RejectReason = Literal[
    "max_connections",
    "max_connections_per_ip",
    "descriptor_limit",
    "proxy_untrusted",
    "proxy_header_invalid",
    "proxy_header_timeout",
]
"""Why a connection was refused at accept time (or while its PROXY header was awaited)."""

ServerCloseReason = Literal["idle_timeout", "max_lifetime", "shutdown", "setup_failed", "error"]
"""Why the server, not the client, ended a connection."""

REJECT_REASONS: tuple[RejectReason, ...] = get_args(RejectReason)
SERVER_CLOSE_REASONS: tuple[ServerCloseReason, ...] = get_args(ServerCloseReason)
"""Every reason that can be counted, so that metrics show each at 0 before it happens."""


def peer_name(ip: str, port: int) -> str:
    """An address as ``host:port``, or ``[host]:port`` for IPv6."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Connection:
    """One accepted connection as the registry sees it.

    The echo protocol subclasses this, so a connection's record and its protocol are one
    small object. `bytes_sent` counts bytes handed to the transport; `unsent_bytes` says how
    many of those are still queued, so snapshots report what actually left.
    """

    __slots__ = (
        "id",
        "ip",
        "port",
        "via",
        "listener",
        "connected_at",
        "opened_monotonic",
        "bytes_received",
        "bytes_sent",
        "last_activity",
        "_activity_mark",
        "tcp",
        "end_reason",
        "tls_protocol",
        "tcp_read_mark",
        "saved_syn",
    )

    def __init__(self, ip: str, port: int, listener: ListenerStats) -> None:
        self.id = 0
        self.ip = ip
        self.port = port
        self.via: str | None = None
        self.listener = listener
        self.connected_at = 0.0
        self.opened_monotonic = 0.0  # max_lifetime_s counts from it: no wall clock step moves it
        self.bytes_received = 0
        self.bytes_sent = 0
        self.last_activity = 0.0
        self._activity_mark = 0
        self.tcp: TcpInfo | None = None
        """The kernel's view of the path, as last read (path quality on, Linux only)."""
        self.end_reason = "client_eof"
        """Why it ended (see `Registry.close`); set by whoever closes it."""
        self.tls_protocol: str | None = None
        """``TLSv1.3`` and the like on a TLS listener."""
        self.tcp_read_mark = -1
        """Bytes moved when `tcp` was last read (kept by the path quality sampler)."""
        self.saved_syn = b""
        """The headers of its SYN as the kernel saved them (path quality on, Linux only);
        decoded only when someone asks (`syn`)."""

    @property
    def peer(self) -> str:
        """The client as ``host:port``, or ``[host]:port`` for IPv6."""
        return peer_name(self.ip, self.port)

    @property
    def syn(self) -> SynHeaders | None:
        """Its SYN as it arrived, decoded when asked; None if none was saved."""
        return decode_syn(self.saved_syn) if self.saved_syn else None

    def listener_mss(self) -> int | None:
        """The MSS the server advertised on this connection, or None if it can't be read."""
        return None

    def unsent_bytes(self) -> int:
        """Bytes counted in `bytes_sent` that still wait in a user-space buffer."""
        return 0

    def read_tcp_info(self) -> TcpInfo | None:
        """The kernel's TCP_INFO for this connection now, or None if it can't be read."""
        return None

    @property
    def closed_by(self) -> str:
        """``client`` or ``server``: who ended the connection."""
        return "client" if self.end_reason.startswith("client_") else "server"


@dataclass(slots=True)
class ListenerStats:
    """Counters of one echo listener; `port` is the bound port, never 0. The byte counts are
    those of its closed connections: a snapshot adds the open ones'."""

    name: str
    host: str
    port: int
    tls: bool = False
    active: int = 0
    accepted: int = 0
    closed: int = 0
    closed_bytes_received: int = 0
    closed_bytes_sent: int = 0


class StatsSource(Protocol):
    """What the status side reads: a `Registry`, or the aggregate of several workers."""

    @property
    def accepting(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    @property
    def active(self) -> int: ...

    def snapshot(self) -> StatsSnapshot: ...

    def connections(self, limit: int | None = None) -> list[ConnectionSnapshot]: ...

    def peers(self, limit: int | None = None) -> list[PeerSnapshot]: ...

    async def connections_page(
        self, limit: int, after: RowKey | None, encode: RowsEncoder | None = None
    ) -> ConnectionsPage:
        """At most `limit` rows: the busiest (`after` None) or those after `after`; with
        `encode`, as encoded slices."""

    async def refresh(self, connections: int = 0) -> None:
        """Bring the figures (and at least `connections` busiest rows) up to this moment."""


class Registry:
    """Every open connection plus lifetime totals; single-threaded, owned by the event loop.

    `wall_clock` stamps what people read (connected-at, ages); `clock` is monotonic and
    measures uptime and idle times, so a clock step cannot make a connection look idle.
    """

    def __init__(
        self,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        tcp_info_interval_s: float | None = None,
    ) -> None:
        self.wall_clock = wall_clock
        self.clock = clock
        self.accepting = False
        self.ready = False
        """False from the moment shutdown begins, even while still accepting (see /readyz)."""
        self.listeners: list[ListenerStats] = []
        self.udp_listeners: list[UDPListenerStats] = []
        self.accepted = 0
        self.closed = 0
        self.rejected: Counter[str] = Counter()
        self.closed_by_server: Counter[str] = Counter()
        self._per_ip: dict[str, int] = {}
        """Open connections per client address (a plain dict: `Counter` runs Python code to
        count a new address and to forget one)."""
        self._active: dict[int, Connection] = {}
        self._next_id = 1
        self._closed_bytes_received = 0
        self._closed_bytes_sent = 0
        self._started = clock()
        self.pid = os.getpid()
        self.on_last_close: Callable[[], object] | None = None
        """Called when the last active connection closes; used to wait for a drain."""
        self.config_state = ReloadCounters(loaded_at=wall_clock())
        self.on_close: Callable[[Connection], object] | None = None
        """Called for every connection once it is counted as closed (the access log)."""
        self.tcp_info_interval_s = tcp_info_interval_s
        """How often an open connection's TCP_INFO is observed; None: path quality off."""
        self._path_quality = TcpSampler()
        self.budget: BufferBudget | None = None
        """The echo side's buffer budget, whose charge snapshots report."""
        self.access_log_errors = 0
        """Failed access log writes (see `count_access_log_error`)."""

    async def refresh(self, connections: int = 0) -> None:
        """Nothing to fetch: the registry is the live state."""

    def add_listener(self, name: str, host: str, port: int, tls: bool = False) -> ListenerStats:
        stats = ListenerStats(name, host, port, tls)
        self.listeners.append(stats)
        return stats

    def add_udp_listener(self, name: str, host: str, port: int) -> UDPListenerStats:
        stats = UDPListenerStats(name, host, port)
        self.udp_listeners.append(stats)
        return stats

    @property
    def active(self) -> int:
        return len(self._active)

    def open(self, conn: Connection) -> None:
        """Count `conn` as accepted and active from this moment on."""
        conn.id = self._next_id
        self._next_id += 1
        conn.connected_at = self.wall_clock()
        conn.last_activity = conn.opened_monotonic = self.clock()
        self._active[conn.id] = conn
        per_ip = self._per_ip
        per_ip[conn.ip] = per_ip.get(conn.ip, 0) + 1
        self.accepted += 1
        conn.listener.accepted += 1
        conn.listener.active += 1
        if self.tcp_info_interval_s is not None:
            self._path_quality.opened(conn.id)
            if conn.saved_syn:
                self._path_quality.syn_arrived(conn.saved_syn)

    def close(self, conn: Connection, reason: ServerCloseReason | None = None) -> None:
        """Move `conn` from active to closed; calling it twice for one connection is harmless.

        `reason` is given when the server, not the client, ended it (``idle_timeout``...) and
        becomes `conn.end_reason`. With path quality on, TCP_INFO is read a last time here,
        so call this while the socket is still open.
        """
        if self._active.pop(conn.id, None) is None:
            return
        if reason is not None:
            self.closed_by_server[reason] += 1
            conn.end_reason = reason
        if self.tcp_info_interval_s is not None:
            self._path_quality.closed(conn)
        remaining = self._per_ip[conn.ip] - 1
        if remaining:
            self._per_ip[conn.ip] = remaining
        else:
            del self._per_ip[conn.ip]
        self.closed += 1
        listener = conn.listener
        listener.active -= 1
        listener.closed += 1
        sent = conn.bytes_sent - conn.unsent_bytes()
        listener.closed_bytes_received += conn.bytes_received
        listener.closed_bytes_sent += sent
        self._closed_bytes_received += conn.bytes_received
        self._closed_bytes_sent += sent
        if self.on_close is not None:
            self.on_close(conn)
        if not self._active and self.on_last_close is not None:
            self.on_last_close()

    def active_from(self, ip: str) -> int:
        """How many open connections come from `ip`."""
        return self._per_ip.get(ip, 0)

    def count_access_log_error(self) -> None:
        """Count one access log line (or final flush) that could not be written."""
        self.access_log_errors += 1

    def reject(self, reason: str) -> None:
        """Count a connection closed at accept time, by reason (e.g. ``max_connections``)."""
        self.rejected[reason] += 1

    def sweep(self) -> None:
        """Stamp `last_activity` on every connection that read or wrote since the last sweep.

        Called about once a second, this keeps the per-read cost at an integer addition;
        idle times are therefore accurate to the sweep interval. Bytes still queued don't
        count as written, so a client that stops reading goes idle too.
        """
        now = self.clock()
        for conn in self._active.values():
            mark = conn.bytes_received + conn.bytes_sent - conn.unsent_bytes()
            if mark != conn._activity_mark:
                conn._activity_mark = mark
                conn.last_activity = now

    def active_connections(self) -> Iterable[Connection]:
        return self._active.values()

    def snapshot(self) -> StatsSnapshot:
        received = self._closed_bytes_received
        sent = self._closed_bytes_sent
        open_bytes = {s.name: [0, 0] for s in self.listeners}
        """Listener name -> bytes received and sent by its open connections."""
        for conn in self._active.values():
            conn_sent = conn.bytes_sent - conn.unsent_bytes()
            received += conn.bytes_received
            sent += conn_sent
            moved = open_bytes.setdefault(conn.listener.name, [0, 0])
            moved[0] += conn.bytes_received
            moved[1] += conn_sent
        listeners = tuple(
            ListenerSnapshot(
                s.name,
                s.host,
                s.port,
                s.tls,
                s.active,
                s.accepted,
                s.closed,
                s.closed_bytes_received + open_bytes[s.name][0],
                s.closed_bytes_sent + open_bytes[s.name][1],
            )
            for s in self.listeners
        )
        return StatsSnapshot(
            taken_at=self.wall_clock(),
            uptime_seconds=self.clock() - self._started,
            accepting=self.accepting,
            ready=self.ready,
            active=len(self._active),
            accepted=self.accepted,
            closed=self.closed,
            rejected=dict(self.rejected),
            closed_by_server=dict(self.closed_by_server),
            bytes_received=received,
            bytes_sent=sent,
            listeners=listeners,
            workers=(
                WorkerSnapshot(
                    self.pid, len(self._active), self.accepted, self.closed, received, sent
                ),
            ),
            config_loaded_at=self.config_state.loaded_at,
            reloads=self.config_state.reloads,
            reloads_failed=self.config_state.failed,
            tcp=self._tcp_snapshot(),
            udp_listeners=tuple(udp.snapshot() for udp in self.udp_listeners),
            buffered_bytes=self.budget.charged if self.budget else 0,
            access_log_errors=self.access_log_errors,
        )

    def connections(self, limit: int | None = None) -> list[ConnectionSnapshot]:
        """Open connections, most bytes moved first, at most `limit` of them."""
        now = self.clock()
        active = self._active.values()
        # A page asks for the top 100 of maybe 10,000 every second: no full sort for that.
        ranked = (
            sorted(active, key=moved, reverse=True)
            if limit is None
            else heapq.nlargest(limit, active, key=moved)
        )
        return self._rows(ranked, now)

    async def connections_page(
        self, limit: int, after: RowKey | None, encode: RowsEncoder | None = None
    ) -> ConnectionsPage:
        """A page of rows, built a slice at a time: see `server.pages.build_page`."""
        return await build_page(self, limit, after, encode)

    def read_now(self, conn: Connection) -> None:
        """With path quality on, read the open `conn`'s TCP_INFO now. A TLS connection does
        as its handshake ends and on the client's EOF: its socket is closed by the time its
        `connection_lost` runs, too late for the last read `close` makes."""
        if self.tcp_info_interval_s is not None and conn.id in self._active:
            self._path_quality.read(conn)

    def rows(self, connections: list[Connection]) -> list[ConnectionSnapshot]:
        """Those of `connections` still open, as rows, their TCP_INFO read now."""
        still_open = [conn for conn in connections if conn.id in self._active]
        return self._rows(still_open, self.clock())

    def _rows(self, connections: list[Connection], now: float) -> list[ConnectionSnapshot]:
        """`connections` as rows, their TCP_INFO read now when path quality is on."""
        if self.tcp_info_interval_s is not None:
            for conn in connections:
                self._path_quality.read(conn)
        return [
            ConnectionSnapshot(
                id=c.id,
                peer=c.peer,
                via=c.via,
                worker=self.pid,
                listener=c.listener.name,
                connected_at=c.connected_at,
                age_s=max(0.0, now - c.opened_monotonic),
                idle_s=max(0.0, now - c.last_activity),
                bytes_received=c.bytes_received,
                bytes_sent=c.bytes_sent - c.unsent_bytes(),
                tcp=c.tcp,
                syn=c.syn,
                listener_mss=c.listener_mss() if c.saved_syn else None,
            )
            for c in connections
        ]

    def peers(self, limit: int | None = None) -> list[PeerSnapshot]:
        """Peers of every UDP listener, most datagrams first, at most `limit` of them."""
        now, wall_now = self.clock(), self.wall_clock()
        every = [(peer, udp.name) for udp in self.udp_listeners for peer in udp.peers.values()]
        count = len(every) if limit is None else limit
        ranked = heapq.nlargest(count, every, key=lambda item: item[0].datagrams_received)
        return [peer_snapshot(peer, name, self.pid, now, wall_now) for peer, name in ranked]

    def _tcp_snapshot(self) -> TcpSnapshot:
        """Path quality now, or an unmeasured snapshot when it is off."""
        interval_s = self.tcp_info_interval_s
        if interval_s is None:
            return TcpSnapshot()
        return self._path_quality.snapshot(self._active, interval_s, self.clock())
