"""The UDP parts without sockets: listener budgets and the bounded peers table."""

from __future__ import annotations

import math

from echostat.server.config import UDPConfig
from echostat.server.udp import MAX_DATAGRAM_BYTES, ListenerBudget
from echostat.server.udp_stats import Peer, Source, UDPListenerStats


def test_listener_budget_holds_a_second_and_refills_at_its_rate() -> None:
    """10 datagrams/s: a full budget is 10; after spending it, 0.5 s brings back 5, and an
    hour of silence still only refills to 10. Bytes hold at least one largest datagram."""
    budget = ListenerBudget(UDPConfig(max_datagrams_per_s=10, max_bytes_per_s=1000))
    assert (budget.datagrams, budget.bytes) == (10, MAX_DATAGRAM_BYTES)
    budget.datagrams = 0
    budget.refill(0.5)
    assert budget.datagrams == 5
    budget.refill(3600)
    assert (budget.datagrams, budget.bytes) == (10, MAX_DATAGRAM_BYTES)


def test_a_limit_of_zero_is_an_endless_budget() -> None:
    budget = ListenerBudget(UDPConfig(max_datagrams_per_s=0, max_bytes_per_s=0))
    budget.refill(1.0)
    assert budget.datagrams == budget.bytes == math.inf


def add_peer(stats: UDPListenerStats, ip: str, port: int, now: float) -> None:
    source = stats.sources.setdefault(ip, Source(ip, 1.0, now))
    source.peers += 1
    stats.peers[(ip, port)] = Peer(ip, port, source, 0, now)


def test_forgetting_the_last_peer_of_an_address_forgets_its_source() -> None:
    """Two ports of one IP share a source, which goes with the second of them."""
    stats = UDPListenerStats("udp", "127.0.0.1", 7)
    add_peer(stats, "10.0.0.1", 5000, 0.0)
    add_peer(stats, "10.0.0.1", 5001, 0.0)
    stats.forget(("10.0.0.1", 5000))
    assert list(stats.sources) == ["10.0.0.1"]
    stats.forget(("10.0.0.1", 5001))
    assert stats.sources == {}


def test_expire_forgets_idle_peers_oldest_first() -> None:
    """Peers last seen 40 s and 35 s ago go with a 30 s idle time; one seen 10 s ago stays."""
    stats = UDPListenerStats("udp", "127.0.0.1", 7)
    for port, seen in ((1, 60.0), (2, 65.0), (3, 90.0)):
        add_peer(stats, "10.0.0.1", 4000 + port, seen)
    stats.expire(now=100.0, idle_s=30.0)
    assert list(stats.peers) == [("10.0.0.1", 4003)]
    assert stats.snapshot().peers == 1
