"""Rates and chart history derived from consecutive registry snapshots."""

from __future__ import annotations

from echostat.server.registry import Connection, Registry
from echostat.web.history import History


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rates_are_counter_differences_per_second() -> None:
    """Two snapshots 2 s apart: 4 new connections and 1000/600 bytes give 2, 500 and 300 /s."""
    clock = FakeClock()
    registry = Registry(wall_clock=clock, clock=clock)
    listener = registry.add_listener("main", "127.0.0.1", 7007)
    history = History(capacity=300)
    assert history.add(registry.snapshot()).connections_per_s == 0.0
    conns = [Connection("127.0.0.1", port, listener) for port in range(4)]
    for conn in conns:
        registry.open(conn)
    conns[0].bytes_received, conns[0].bytes_sent = 1000, 600
    clock.now += 2.0

    rates = history.add(registry.snapshot())

    assert rates.interval_s == 2.0
    assert rates.connections_per_s == 2.0
    assert rates.bytes_received_per_s == 500.0
    assert rates.bytes_sent_per_s == 300.0
    assert history.document()["active"] == [0, 4]


def test_history_keeps_only_the_last_capacity_points() -> None:
    """Older points fall off the front; columns stay aligned and oldest first."""
    clock = FakeClock()
    registry = Registry(wall_clock=clock, clock=clock)
    history = History(capacity=3)
    for _ in range(5):
        history.add(registry.snapshot())
        clock.now += 1.0

    document = history.document()

    assert document["taken_at"] == [1002.0, 1003.0, 1004.0]
    assert all(len(column) == 3 for key, column in document.items() if key != "capacity")
