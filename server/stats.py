"""The live connection registry and its counters, read by the status side as snapshots.

The echo path only does integer additions on a `Connection`; everything else (totals,
idle times, per-listener figures) is computed when somebody asks. No Tornado imports, so
this module is trivially unit-testable.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from echostat.server.tcp_info import TcpInfo
from echostat.server.udp_stats import (
    PeerSnapshot,
    UDPListenerSnapshot,
    UDPListenerStats,
    peer_snapshot,
)

if TYPE_CHECKING:
    from echostat.server.budget import BufferBudget


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
        "bytes_received",
        "bytes_sent",
        "last_activity",
        "_activity_mark",
        "tcp",
        "end_reason",
        "tls_protocol",
        "_tcp_mark",
    )

    def __init__(self, ip: str, port: int, listener: ListenerStats) -> None:
        self.id = 0
        self.ip = ip
        self.port = port
        self.via: str | None = None
        self.listener = listener
        self.connected_at = 0.0
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
        self._tcp_mark = -1
        """Bytes moved when `tcp` was last read."""

    @property
    def peer(self) -> str:
        """The client as ``host:port``, or ``[host]:port`` for IPv6."""
        return peer_name(self.ip, self.port)

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
    """Counters of one echo listener; `port` is the bound port, never 0."""

    name: str
    host: str
    port: int
    tls: bool = False
    active: int = 0
    accepted: int = 0


@dataclass(slots=True)
class ReloadCounters:
    """When the configuration in force was loaded (wall clock), and how reloads went."""

    loaded_at: float
    reloads: int = 0
    failed: int = 0

    def applied(self) -> None:
        self.reloads += 1
        self.loaded_at = time.time()


@dataclass(frozen=True)
class ListenerSnapshot:
    name: str
    host: str
    port: int
    tls: bool
    active: int
    accepted: int


@dataclass(frozen=True)
class WorkerSnapshot:
    """One worker process's share of the totals."""

    pid: int
    active: int
    accepted: int
    closed: int
    bytes_received: int
    bytes_sent: int
    stale_s: float = 0.0
    """How old these figures are: 0 in a single process, else the age of the worker's report."""


RTT_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds of the RTT histogram, from loopback (tens of µs) to a bad satellite hop."""


@dataclass(frozen=True)
class TcpSnapshot:
    """Path quality from TCP_INFO: RTTs of open connections, lifetime retransmits and the RTT
    histogram (one observation per connection at close, and at most one per interval while
    open). `measured` is false when path quality is off or the platform has no TCP_INFO."""

    measured: bool = False
    open_rtt_ms: tuple[float, ...] = ()
    """Sorted; one per open connection whose RTT is known."""
    retransmits: int = 0
    rtt_buckets: tuple[int, ...] = (0,) * (len(RTT_BUCKETS_S) + 1)
    """Observations per bucket of `RTT_BUCKETS_S`, not cumulative; the last is above them all."""
    rtt_sum_s: float = 0.0

    @property
    def rtt_count(self) -> int:
        return sum(self.rtt_buckets)

    def rtt_percentile_ms(self, fraction: float) -> float | None:
        """The nearest-rank percentile of open connections' RTTs, None with none known."""
        rtts = self.open_rtt_ms
        if not rtts:
            return None
        return rtts[max(0, math.ceil(fraction * len(rtts)) - 1)]

    @classmethod
    def merge(cls, live: Sequence[TcpSnapshot], retired: Sequence[TcpSnapshot]) -> TcpSnapshot:
        """The sum over processes; only `live` ones have open connections."""
        everyone = [*live, *retired]
        return cls(
            measured=any(t.measured for t in everyone),
            open_rtt_ms=tuple(heapq.merge(*(t.open_rtt_ms for t in live))),
            retransmits=sum(t.retransmits for t in everyone),
            rtt_buckets=tuple(map(sum, zip(*(t.rtt_buckets for t in everyone), strict=True)))
            or cls().rtt_buckets,
            rtt_sum_s=sum(t.rtt_sum_s for t in everyone),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TcpSnapshot:
        return cls(
            **{
                **data,
                "open_rtt_ms": tuple(data["open_rtt_ms"]),
                "rtt_buckets": tuple(data["rtt_buckets"]),
            }
        )


@dataclass(frozen=True)
class StatsSnapshot:
    """Totals at one instant; `bytes_*` include connections that already closed."""

    taken_at: float
    uptime_seconds: float
    accepting: bool
    ready: bool
    active: int
    accepted: int
    closed: int
    rejected: dict[str, int]
    closed_by_server: dict[str, int]
    bytes_received: int
    bytes_sent: int
    listeners: tuple[ListenerSnapshot, ...]
    workers: tuple[WorkerSnapshot, ...]
    udp_listeners: tuple[UDPListenerSnapshot, ...] = ()
    worker_restarts: int = 0
    """Workers the supervisor restarted after they died; always 0 for a single process."""
    config_loaded_at: float = 0.0
    reloads: int = 0
    reloads_failed: int = 0
    tcp: TcpSnapshot = field(default_factory=TcpSnapshot)
    buffered_bytes: int = 0
    """Echo buffers held now for clients that read slower than they send."""

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for sending between processes as JSON."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatsSnapshot:
        """The inverse of `to_dict`."""
        return cls(
            **{
                **data,
                "listeners": tuple(ListenerSnapshot(**item) for item in data["listeners"]),
                "workers": tuple(WorkerSnapshot(**item) for item in data["workers"]),
                "tcp": TcpSnapshot.from_dict(data["tcp"]),
                "udp_listeners": tuple(
                    UDPListenerSnapshot(**item) for item in data.get("udp_listeners", ())
                ),
            }
        )


@dataclass(frozen=True)
class ConnectionSnapshot:
    id: int
    peer: str
    via: str | None
    worker: int
    listener: str
    connected_at: float
    age_s: float
    idle_s: float
    bytes_received: int
    bytes_sent: int
    tcp: TcpInfo | None = None


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

    async def refresh(self, connections: int = 0) -> None:
        """Bring the figures (and at least `connections` busiest rows) up to this moment."""


_TCP_READS_MIN = 100
"""TCP_INFO reads a snapshot may always make, however few connections are due."""


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
        self._per_ip: Counter[str] = Counter()
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
        self._closed_retransmits = 0
        self._open_retransmits = 0
        self._open_rtts: list[float] = []
        """Sorted: the last known RTT of every open connection that has one."""
        self._tcp_new: deque[Connection] = deque()
        """Connections not yet read, oldest first."""
        self._tcp_due: deque[tuple[float, Connection]] = deque()
        """Connections read before, by when they are due again (in order: one interval on)."""
        self._rtt_buckets = [0] * (len(RTT_BUCKETS_S) + 1)
        self._rtt_sum_s = 0.0
        self.budget: BufferBudget | None = None
        """The echo side's buffer budget, whose charge snapshots report."""

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
        conn.last_activity = self.clock()
        self._active[conn.id] = conn
        self._per_ip[conn.ip] += 1
        self.accepted += 1
        conn.listener.accepted += 1
        conn.listener.active += 1
        if self.tcp_info_interval_s is not None:
            self._tcp_new.append(conn)

    def close(self, conn: Connection, reason: str | None = None) -> None:
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
            self._forget_tcp(conn.tcp)
            conn.tcp = conn.read_tcp_info() or conn.tcp
            self._observe_rtt(conn.tcp)
            self._closed_retransmits += (conn.tcp and conn.tcp.retransmits) or 0
        remaining = self._per_ip[conn.ip] - 1
        if remaining:
            self._per_ip[conn.ip] = remaining
        else:
            del self._per_ip[conn.ip]
        self.closed += 1
        conn.listener.active -= 1
        self._closed_bytes_received += conn.bytes_received
        self._closed_bytes_sent += conn.bytes_sent - conn.unsent_bytes()
        if self.on_close is not None:
            self.on_close(conn)
        if not self._active and self.on_last_close is not None:
            self.on_last_close()

    def active_from(self, ip: str) -> int:
        """How many open connections come from `ip`."""
        return self._per_ip[ip]

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
        for conn in self._active.values():
            received += conn.bytes_received
            sent += conn.bytes_sent - conn.unsent_bytes()
        listeners = tuple(
            ListenerSnapshot(s.name, s.host, s.port, s.tls, s.active, s.accepted)
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
        )

    def _tcp_snapshot(self) -> TcpSnapshot:
        """Path quality now, from each open connection's last known TCP_INFO, after reading
        the connections that are due: new ones first, then those read an interval ago."""
        interval_s = self.tcp_info_interval_s
        if interval_s is None:
            return TcpSnapshot()
        now = self.clock()
        # Spread the reads: however many connections opened at once, one snapshot reads at
        # most its share of them (each is due once per interval), never all 10,000 at once.
        budget = max(_TCP_READS_MIN, math.ceil(len(self._active) / interval_s))
        while budget and (conn := self._next_due(now)) is not None:
            self._tcp_due.append((now + interval_s, conn))
            # Idle with nothing in flight: the kernel has nothing new to say about the path.
            if conn.bytes_received + conn.bytes_sent == conn._tcp_mark and not (
                conn.tcp and conn.tcp.unacked
            ):
                continue
            budget -= 1
            self._track_tcp(conn, conn.read_tcp_info() or conn.tcp)
            self._observe_rtt(conn.tcp)
        return TcpSnapshot(
            measured=True,
            open_rtt_ms=tuple(self._open_rtts),
            retransmits=self._closed_retransmits + self._open_retransmits,
            rtt_buckets=tuple(self._rtt_buckets),
            rtt_sum_s=self._rtt_sum_s,
        )

    def _next_due(self, now: float) -> Connection | None:
        """The next open connection whose TCP_INFO is due by `now`, taken off its queue."""
        while self._tcp_new or (self._tcp_due and self._tcp_due[0][0] <= now):
            conn = self._tcp_new.popleft() if self._tcp_new else self._tcp_due.popleft()[1]
            if self._active.get(conn.id) is conn:  # else it closed meanwhile
                return conn
        return None

    def _track_tcp(self, conn: Connection, info: TcpInfo | None) -> None:
        """Make `info` the open connection `conn`'s last known TCP_INFO, in the aggregates."""
        self._forget_tcp(conn.tcp)
        conn.tcp = info
        conn._tcp_mark = conn.bytes_received + conn.bytes_sent
        if info is not None:
            if info.rtt_ms is not None:
                bisect.insort(self._open_rtts, info.rtt_ms)
            self._open_retransmits += info.retransmits or 0

    def _forget_tcp(self, info: TcpInfo | None) -> None:
        """Take `info`, an open connection's last known TCP_INFO, out of the aggregates."""
        if info is not None:
            if info.rtt_ms is not None:
                del self._open_rtts[bisect.bisect_left(self._open_rtts, info.rtt_ms)]
            self._open_retransmits -= info.retransmits or 0

    def _observe_rtt(self, info: TcpInfo | None) -> None:
        """One observation of the RTT histogram."""
        if info is not None and info.rtt_ms is not None:
            rtt_s = info.rtt_ms / 1000
            self._rtt_buckets[bisect.bisect_left(RTT_BUCKETS_S, rtt_s)] += 1
            self._rtt_sum_s += rtt_s

    def connections(self, limit: int | None = None) -> list[ConnectionSnapshot]:
        """Open connections, most bytes moved first, at most `limit` of them."""
        now = self.clock()
        wall_now = self.wall_clock()

        def moved(conn: Connection) -> int:
            return conn.bytes_received + conn.bytes_sent

        active = self._active.values()
        # A page asks for the top 100 of maybe 10,000 every second: no full sort for that.
        ranked = (
            sorted(active, key=moved, reverse=True)
            if limit is None
            else heapq.nlargest(limit, active, key=moved)
        )
        if self.tcp_info_interval_s is not None:
            for conn in ranked:
                self._track_tcp(conn, conn.read_tcp_info() or conn.tcp)
        return [
            ConnectionSnapshot(
                id=c.id,
                peer=c.peer,
                via=c.via,
                worker=self.pid,
                listener=c.listener.name,
                connected_at=c.connected_at,
                age_s=max(0.0, wall_now - c.connected_at),
                idle_s=max(0.0, now - c.last_activity),
                bytes_received=c.bytes_received,
                bytes_sent=c.bytes_sent - c.unsent_bytes(),
                tcp=c.tcp,
            )
            for c in ranked
        ]

    def peers(self, limit: int | None = None) -> list[PeerSnapshot]:
        """Peers of every UDP listener, most datagrams first, at most `limit` of them."""
        now, wall_now = self.clock(), self.wall_clock()
        every = [(peer, udp.name) for udp in self.udp_listeners for peer in udp.peers.values()]
        count = len(every) if limit is None else limit
        ranked = heapq.nlargest(count, every, key=lambda item: item[0].datagrams_received)
        return [peer_snapshot(peer, name, self.pid, now, wall_now) for peer, name in ranked]
