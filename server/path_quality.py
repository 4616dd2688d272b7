"""Path quality from TCP_INFO: when each open connection is read, and what the reads add up to.

The sampler keeps the aggregates (open connections' RTTs, retransmits, the RTT histogram)
and the queues that spread reads over an interval; the connections read their own TCP_INFO.
No I/O and no Tornado here, so it is unit-testable with fake connections.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from echostat.server.syn import OPTION_NAMES, tally
from echostat.server.tcp_info import TcpInfo

if TYPE_CHECKING:
    from echostat.server.registry import Connection

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

SYN_MSS_BUCKETS = (536, 1000, 1220, 1300, 1360, 1380, 1400, 1420, 1440, 1452, 1460, 8960, 65495)
"""Upper bounds of the SYN MSS histogram: the minimum, common clamps, IPv6 and IPv4 over
tunnels, PPPoE and Ethernet, jumbo frames, loopback."""


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
    syn_mss_buckets: tuple[int, ...] = (0,) * (len(SYN_MSS_BUCKETS) + 1)
    """SYNs with an MSS option per bucket of `SYN_MSS_BUCKETS`, not cumulative."""
    syn_mss_sum: int = 0
    syn_options: tuple[int, ...] = (0,) * len(OPTION_NAMES)
    """SYNs carrying each option of `OPTION_NAMES`."""

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
    def merge(cls, snapshots: Sequence[TcpSnapshot]) -> TcpSnapshot:
        """The sum over processes (a retired one's `open_rtt_ms` is already empty)."""
        return cls(
            measured=any(t.measured for t in snapshots),
            open_rtt_ms=tuple(heapq.merge(*(t.open_rtt_ms for t in snapshots))),
            retransmits=sum(t.retransmits for t in snapshots),
            rtt_buckets=tuple(map(sum, zip(*(t.rtt_buckets for t in snapshots), strict=True)))
            or cls().rtt_buckets,
            rtt_sum_s=sum(t.rtt_sum_s for t in snapshots),
            syn_mss_buckets=_sums([t.syn_mss_buckets for t in snapshots], SYN_MSS_BUCKETS, 1),
            syn_mss_sum=sum(t.syn_mss_sum for t in snapshots),
            syn_options=_sums([t.syn_options for t in snapshots], OPTION_NAMES, 0),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TcpSnapshot:
        """The inverse of `dataclasses.asdict`, for snapshots sent between processes."""
        return cls(
            **{
                **data,
                "open_rtt_ms": tuple(data["open_rtt_ms"]),
                "rtt_buckets": tuple(data["rtt_buckets"]),
                "syn_mss_buckets": tuple(data["syn_mss_buckets"]),
                "syn_options": tuple(data["syn_options"]),
            }
        )


def _sums(rows: list[tuple[int, ...]], names: tuple[object, ...], extra: int) -> tuple[int, ...]:
    """Column sums of `rows`, each one count per name (plus `extra`); zeros without rows."""
    return tuple(map(sum, zip(*rows, strict=True))) or (0,) * (len(names) + extra)


_TCP_READS_MIN = 100
"""TCP_INFO reads a snapshot may always make, however few connections are due."""


class TcpSampler:
    """Reads open connections' TCP_INFO, each at most once per interval, and sums the reads.

    The registry tells it when a connection opens and closes; a snapshot reads those that are
    due and reports the aggregates. Single-threaded, owned by the event loop.
    """

    def __init__(self) -> None:
        self._closed_retransmits = 0
        self._open_retransmits = 0
        self._open_rtts: list[float] = []
        """Sorted: the last known RTT of every open connection that has one."""
        # The queues hold connection ids, never connections: a connection that closes before
        # its turn is freed at once, and its id is skipped when its turn comes.
        self._new: deque[int] = deque()
        """Ids of connections not yet read, oldest first."""
        self.opened: Callable[[int], None] = self._new.append
        """`opened(conn.id)`: `conn` is open; read it in the next snapshot, before those read
        already. The queue's own append, so opening a connection runs no Python frame here."""
        self._due: deque[tuple[float, int]] = deque()
        """Ids of connections read before, by when they are due again (in order: one interval
        on)."""
        self._rtt_buckets = [0] * (len(RTT_BUCKETS_S) + 1)
        self._rtt_sum_s = 0.0
        self._syn_mss_buckets = [0] * (len(SYN_MSS_BUCKETS) + 1)
        self._syn_mss_sum = 0
        self._syn_options = [0] * len(OPTION_NAMES)
        self._new_syns: list[bytes] = []
        """Saved SYNs of connections opened since the last snapshot, not yet counted."""
        self.syn_arrived: Callable[[bytes], None] = self._new_syns.append
        """`syn_arrived(conn.saved_syn)` as a connection opens: count it at the next snapshot.
        The list's own append, as `opened` is."""

    def closed(self, conn: Connection) -> None:
        """`conn` is closing: read it a last time (so its socket must still be open), observe
        its RTT and count its retransmits for good."""
        self._forget(conn.tcp)
        conn.tcp = conn.read_tcp_info() or conn.tcp
        self._observe_rtt(conn.tcp)
        self._closed_retransmits += (conn.tcp and conn.tcp.retransmits) or 0

    def read(self, conn: Connection) -> None:
        """Read the open connection `conn`'s TCP_INFO now, out of turn (a page shows it)."""
        self._track(conn, conn.read_tcp_info() or conn.tcp)

    def snapshot(
        self, active: Mapping[int, Connection], interval_s: float, now: float
    ) -> TcpSnapshot:
        """Path quality now, from each open connection's last known TCP_INFO, after reading
        the connections that are due: new ones first, then those read an interval ago."""
        # Spread the reads: however many connections opened at once, one snapshot reads at
        # most its share of them (each is due once per interval), never all 10,000 at once.
        budget = max(_TCP_READS_MIN, math.ceil(len(active) / interval_s))
        while budget and (conn := self._next_due(active, now)) is not None:
            self._due.append((now + interval_s, conn.id))
            # Idle with nothing in flight: the kernel has nothing new to say about the path.
            if conn.bytes_received + conn.bytes_sent == conn.tcp_read_mark and not (
                conn.tcp and conn.tcp.unacked
            ):
                continue
            budget -= 1
            self._track(conn, conn.read_tcp_info() or conn.tcp)
            self._observe_rtt(conn.tcp)
        self._count_syns()
        return TcpSnapshot(
            measured=True,
            open_rtt_ms=tuple(self._open_rtts),
            retransmits=self._closed_retransmits + self._open_retransmits,
            rtt_buckets=tuple(self._rtt_buckets),
            rtt_sum_s=self._rtt_sum_s,
            syn_mss_buckets=tuple(self._syn_mss_buckets),
            syn_mss_sum=self._syn_mss_sum,
            syn_options=tuple(self._syn_options),
        )

    def _next_due(self, active: Mapping[int, Connection], now: float) -> Connection | None:
        """The next open connection whose TCP_INFO is due by `now`, taken off its queue."""
        while self._new or (self._due and self._due[0][0] <= now):
            if self._new:
                conn = active.get(self._new.popleft())
            else:
                conn = active.get(self._due.popleft()[1])
            if conn is not None:  # else it closed meanwhile
                return conn
        return None

    def _track(self, conn: Connection, info: TcpInfo | None) -> None:
        """Make `info` the open connection `conn`'s last known TCP_INFO, in the aggregates."""
        self._forget(conn.tcp)
        conn.tcp = info
        conn.tcp_read_mark = conn.bytes_received + conn.bytes_sent
        if info is not None:
            if info.rtt_ms is not None:
                bisect.insort(self._open_rtts, info.rtt_ms)
            self._open_retransmits += info.retransmits or 0

    def _forget(self, info: TcpInfo | None) -> None:
        """Take `info`, an open connection's last known TCP_INFO, out of the aggregates."""
        if info is not None:
            if info.rtt_ms is not None:
                del self._open_rtts[bisect.bisect_left(self._open_rtts, info.rtt_ms)]
            self._open_retransmits -= info.retransmits or 0

    def _count_syns(self) -> None:
        """Count the options and observe the MSS of the SYNs of connections opened since the
        last snapshot (decoded here, once per kind of SYN)."""
        for syn, count in tally(self._new_syns).items():
            for name in syn.options:
                self._syn_options[OPTION_NAMES.index(name)] += count
            if syn.mss is not None:
                self._syn_mss_buckets[bisect.bisect_left(SYN_MSS_BUCKETS, syn.mss)] += count
                self._syn_mss_sum += syn.mss * count
        self._new_syns.clear()

    def _observe_rtt(self, info: TcpInfo | None) -> None:
        """One observation of the RTT histogram."""
        if info is not None and info.rtt_ms is not None:
            rtt_s = info.rtt_ms / 1000
            self._rtt_buckets[bisect.bisect_left(RTT_BUCKETS_S, rtt_s)] += 1
            self._rtt_sum_s += rtt_s
