"""Path quality in the registry and across workers: RTTs, retransmits, the RTT histogram."""

from __future__ import annotations

import dataclasses

import pytest

from echostat.server.fleet import FleetStats
from echostat.server.messages import encode_report
from echostat.server.path_quality import RTT_BUCKETS_S, TcpSnapshot
from echostat.server.registry import Connection, ListenerStats, Registry
from echostat.server.tcp_info import TcpInfo

UNKNOWN = TcpInfo(None, None, None, None, None, None, None, None)


class KernelConnection(Connection):
    """A connection whose TCP_INFO a test sets; counts how often it was read."""

    __slots__ = ("info", "reads")

    def __init__(self, listener: ListenerStats, rtt_ms: float, retransmits: int = 0) -> None:
        super().__init__("127.0.0.1", 40000, listener)
        self.info: TcpInfo | None = dataclasses.replace(
            UNKNOWN, rtt_ms=rtt_ms, retransmits=retransmits
        )
        self.reads = 0

    def read_tcp_info(self) -> TcpInfo | None:
        self.reads += 1
        return self.info


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def registry_with(clock: Clock, *rtts_ms: float, interval_s: float = 10.0) -> Registry:
    registry = Registry(clock=clock, tcp_info_interval_s=interval_s)
    listener = registry.add_listener("main", "127.0.0.1", 7007)
    for rtt in rtts_ms:
        registry.open(KernelConnection(listener, rtt))
    return registry


def connections(registry: Registry) -> list[KernelConnection]:
    return [c for c in registry.active_connections() if isinstance(c, KernelConnection)]


def test_snapshot_gives_sorted_rtts_of_open_connections_and_percentiles() -> None:
    """Nearest-rank percentiles over every open connection whose RTT the kernel gave."""
    tcp = registry_with(Clock(), *[float(n) for n in range(100, 0, -1)]).snapshot().tcp
    assert tcp.measured
    assert tcp.open_rtt_ms == tuple(float(n) for n in range(1, 101))
    assert [tcp.rtt_percentile_ms(f) for f in (0.5, 0.9, 0.99, 1.0)] == [50.0, 90.0, 99.0, 100.0]


def test_each_open_connection_is_observed_at_most_once_per_interval() -> None:
    """Snapshots within the interval read no one again; after it, everyone who moved bytes."""
    clock = Clock()
    registry = registry_with(clock, 1.0, 2.0, interval_s=10.0)
    registry.snapshot()
    registry.snapshot()
    assert registry.snapshot().tcp.rtt_count == 2
    for conn in connections(registry):
        conn.bytes_received += 1
    clock.now += 10.0
    assert registry.snapshot().tcp.rtt_count == 4
    assert [c.reads for c in connections(registry)] == [2, 2]


def test_an_idle_connection_is_read_again_only_with_data_in_flight() -> None:
    """No bytes moved and nothing unacknowledged: no new read; unacknowledged data: read."""
    clock = Clock()
    registry = registry_with(clock, 1.0, 2.0, interval_s=10.0)
    quiet, stalled = connections(registry)
    stalled.info = dataclasses.replace(UNKNOWN, rtt_ms=2.0, unacked=3)
    registry.snapshot()
    clock.now += 10.0
    registry.snapshot()
    assert (quiet.reads, stalled.reads) == (1, 2)


def test_one_snapshot_reads_only_its_share_of_many_new_connections() -> None:
    """2,000 connections at once, 10 s interval: a snapshot reads a tenth, ten read them all."""
    clock = Clock()
    registry = registry_with(clock, *[1.0] * 2000, interval_s=10.0)
    first = registry.snapshot().tcp
    assert len(first.open_rtt_ms) == 200
    for _ in range(9):
        registry.snapshot()
    assert len(registry.snapshot().tcp.open_rtt_ms) == 2000


def test_close_reads_a_last_time_and_keeps_retransmits_in_the_total() -> None:
    """Retransmits of closed connections stay in the total; the close observes the RTT."""
    clock = Clock()
    registry = registry_with(clock, 1.0, 30.0)
    first, second = connections(registry)
    first.info = dataclasses.replace(UNKNOWN, rtt_ms=1.0, retransmits=3)
    second.info = dataclasses.replace(UNKNOWN, rtt_ms=30.0, retransmits=4)
    assert registry.snapshot().tcp.retransmits == 7
    first.info = dataclasses.replace(UNKNOWN, rtt_ms=2.0, retransmits=5)
    registry.close(first)
    assert first.reads == 2
    tcp = registry.snapshot().tcp
    assert tcp.retransmits == 9
    assert tcp.open_rtt_ms == (30.0,)
    assert tcp.rtt_count == 3
    assert tcp.rtt_sum_s == pytest.approx(0.001 + 0.030 + 0.002)


def test_a_failed_last_read_keeps_the_last_known_values() -> None:
    """A socket that can't be read at close (setup failed) keeps what was read before."""
    registry = registry_with(Clock(), 5.0)
    (conn,) = connections(registry)
    conn.info = dataclasses.replace(UNKNOWN, rtt_ms=5.0, retransmits=2)
    registry.snapshot()
    conn.info = None
    registry.close(conn)
    assert registry.snapshot().tcp.retransmits == 2


def test_rtts_fall_into_prometheus_buckets_by_upper_bound() -> None:
    """An RTT equal to a bound counts in that bucket (le), beyond the last in the +Inf one."""
    registry = registry_with(Clock(), 1.0, 1.5, 10_000.0)
    buckets = registry.snapshot().tcp.rtt_buckets
    assert buckets[RTT_BUCKETS_S.index(0.001)] == 1
    assert buckets[RTT_BUCKETS_S.index(0.0025)] == 1
    assert buckets[-1] == 1
    assert sum(buckets) == 3


def test_off_reads_nothing() -> None:
    """Without an interval (path quality off) no TCP_INFO is read, not even at close."""
    registry = Registry()
    conn = KernelConnection(registry.add_listener("main", "127.0.0.1", 7007), 1.0)
    registry.open(conn)
    assert registry.snapshot().tcp == TcpSnapshot()
    registry.connections(10)
    registry.close(conn)
    assert conn.reads == 0


def test_workers_sum_retransmits_and_histograms_and_merge_rtts() -> None:
    """Two workers' reports: RTTs merged in order, retransmits and buckets summed; a dead
    worker's totals stay, its open connections' RTTs go."""
    clock = Clock()
    one, two = registry_with(clock, 1.0, 3.0), registry_with(clock, 2.0)
    connections(one)[0].info = dataclasses.replace(UNKNOWN, rtt_ms=1.0, retransmits=6)
    fleet = FleetStats()
    fleet.update(1, encode_report(one.snapshot(), one.connections(10)))
    fleet.update(2, encode_report(two.snapshot(), two.connections(10)))
    tcp = fleet.snapshot().tcp
    assert tcp.open_rtt_ms == (1.0, 2.0, 3.0)
    assert tcp.retransmits == 6
    assert tcp.rtt_count == 3
    assert fleet.connections(10)[0].tcp is not None
    fleet.retire(1)
    tcp = fleet.snapshot().tcp
    assert tcp.open_rtt_ms == (2.0,)
    assert (tcp.retransmits, tcp.rtt_count) == (6, 3)
