"""The connection registry: counting, closing, rejecting, idle sweeps and snapshots."""

from __future__ import annotations

import pytest

from echostat.server.fleet import FleetStats
from echostat.server.messages import encode_report
from echostat.server.registry import Connection, ListenerStats, Registry


class Clocks:
    """Wall and monotonic clocks that move only when a test says so."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.monotonic = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.monotonic += seconds


class QueuedConnection(Connection):
    """A connection with bytes still waiting in its user-space send buffer."""

    __slots__ = ("queued",)

    def __init__(self, ip: str, port: int, listener: ListenerStats) -> None:
        super().__init__(ip, port, listener)
        self.queued = 0

    def unsent_bytes(self) -> int:
        return self.queued


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def registry(clocks: Clocks) -> Registry:
    registry = Registry(wall_clock=lambda: clocks.wall, clock=lambda: clocks.monotonic)
    registry.add_listener("main", "127.0.0.1", 7007)
    return registry


def _open(registry: Registry, received: int = 0, listener: int = 0) -> QueuedConnection:
    """Open a connection on listener number `listener` that has moved `received` bytes each way."""
    conn = QueuedConnection("127.0.0.1", 50000 + registry.accepted, registry.listeners[listener])
    registry.open(conn)
    conn.bytes_received = conn.bytes_sent = received
    return conn


def test_open_counts_accepted_and_active_per_listener(registry: Registry, clocks: Clocks) -> None:
    """Each open gets the next id and the wall-clock time, and counts in totals and listener."""
    registry.add_listener("second", "::1", 7008)
    first, second = _open(registry), _open(registry, listener=1)
    assert (first.id, second.id) == (1, 2)
    assert first.connected_at == clocks.wall
    assert (registry.active, registry.accepted) == (2, 2)
    assert [(s.active, s.accepted) for s in registry.listeners] == [(1, 1), (1, 1)]


def test_closing_twice_counts_once(registry: Registry) -> None:
    """A second close of the same connection changes nothing."""
    conn = _open(registry)
    registry.close(conn)
    registry.close(conn)
    assert (registry.active, registry.closed) == (0, 1)
    assert registry.listeners[0].active == 0


def test_last_close_calls_the_drain_hook_once(registry: Registry) -> None:
    """on_last_close fires when the last active connection closes, not before."""
    calls: list[int] = []
    registry.on_last_close = lambda: calls.append(registry.active)
    first, second = _open(registry), _open(registry)
    registry.close(first)
    assert calls == []
    registry.close(second)
    registry.close(second)
    assert calls == [0]


def test_rejections_are_counted_by_reason(registry: Registry) -> None:
    """Rejects add up per reason and in total, and never count as accepted."""
    for reason in ("max_connections", "max_connections", "per_ip"):
        registry.reject(reason)
    snap = registry.snapshot()
    assert snap.rejected == {"max_connections": 2, "per_ip": 1}
    assert snap.rejected_total == 3
    assert (snap.accepted, snap.active) == (0, 0)


def test_snapshot_totals_include_closed_connections(registry: Registry, clocks: Clocks) -> None:
    """Byte totals keep closed connections' bytes and leave out bytes still queued."""
    closed, open_ = _open(registry, received=1000), _open(registry, received=300)
    closed.queued, open_.queued = 0, 100
    registry.close(closed)
    clocks.advance(5)
    snap = registry.snapshot()
    assert (snap.active, snap.accepted, snap.closed) == (1, 2, 1)
    assert (snap.bytes_received, snap.bytes_sent) == (1300, 1200)
    assert snap.uptime_seconds == 5
    assert snap.taken_at == clocks.wall
    assert [(s.name, s.port, s.active, s.accepted) for s in snap.listeners] == [
        ("main", 7007, 1, 2)
    ]


def test_sweep_stamps_activity_only_on_connections_that_moved(
    registry: Registry, clocks: Clocks
) -> None:
    """After a sweep, a connection whose bytes moved is not idle; a quiet one keeps aging."""
    busy, quiet = _open(registry), _open(registry)
    clocks.advance(10)
    busy.bytes_received += 5
    registry.sweep()
    clocks.advance(2)
    idle = {row.id: row.idle_s for row in registry.connections()}
    assert idle == {busy.id: 2, quiet.id: 12}


def test_connections_are_ranked_by_bytes_moved_and_limited(registry: Registry) -> None:
    """connections() lists the busiest first, at most `limit` rows, without queued bytes."""
    small, big, medium = (_open(registry, received=n) for n in (10, 1000, 100))
    big.queued = 40
    rows = registry.connections(limit=2)
    assert [row.id for row in rows] == [big.id, medium.id]
    assert (rows[0].bytes_received, rows[0].bytes_sent) == (1000, 960)
    assert rows[0].peer == big.peer and rows[0].listener == "main"
    assert [row.id for row in registry.connections()] == [big.id, medium.id, small.id]


def test_each_listener_counts_its_closes_and_bytes(registry: Registry) -> None:
    """A listener's snapshot counts its own closed connections and the bytes of its closed
    and open ones, queued bytes left out; the listeners add up to the totals."""
    registry.add_listener("second", "::1", 7008)
    on_main = _open(registry, received=1000)
    closed_second, open_second = _open(registry, 200, listener=1), _open(registry, 30, listener=1)
    open_second.queued = 10
    registry.close(on_main)
    registry.close(closed_second)
    snap = registry.snapshot()
    rows = [(s.name, s.closed, s.bytes_received, s.bytes_sent) for s in snap.listeners]
    assert rows == [("main", 1, 1000, 1000), ("second", 1, 230, 220)]
    assert sum(s.closed for s in snap.listeners) == snap.closed
    assert sum(s.bytes_received for s in snap.listeners) == snap.bytes_received
    assert sum(s.bytes_sent for s in snap.listeners) == snap.bytes_sent


def test_workers_listener_counts_add_up_and_a_dead_workers_open_ones_count_as_closed(
    clocks: Clocks,
) -> None:
    """Across workers a listener's closes and bytes are summed; when a worker dies, its open
    connections count as closed, on their listener too."""
    one, two = (
        Registry(wall_clock=lambda: clocks.wall, clock=lambda: clocks.monotonic) for _ in "12"
    )
    fleet = FleetStats()
    for pid, worker in ((1, one), (2, two)):
        worker.add_listener("main", "127.0.0.1", 7007)
        worker.close(_open(worker, received=100))
        _open(worker, received=10)
        fleet.update(pid, encode_report(worker.snapshot(), []))
    (main,) = fleet.snapshot().listeners
    assert (main.active, main.closed, main.bytes_received, main.bytes_sent) == (2, 2, 220, 220)
    fleet.retire(1)
    (main,) = fleet.snapshot().listeners
    assert (main.active, main.closed, main.bytes_received) == (1, 3, 220)
