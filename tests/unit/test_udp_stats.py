"""The UDP parts without sockets: listener budgets and the bounded peers table."""

from __future__ import annotations

import math

from echostat.server.config import UDPConfig
from echostat.server.udp import MAX_DATAGRAM_BYTES, Clock, ListenerBudget, UDPEchoProtocol
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


def test_a_source_that_owes_waits_outside_the_table_until_its_bucket_is_full() -> None:
    """At 10 datagrams/s, a source with 1 token left when its last peer goes waits in `owing`
    (0.9 s from full): still there 0.5 s later, gone 1 s later. At 1/s the same token is a
    full bucket: that source goes at once."""
    stats = UDPListenerStats("udp", "127.0.0.1", 7)
    add_peer(stats, "10.0.0.1", 5000, 0.0)
    add_peer(stats, "10.0.0.2", 5000, 0.0)
    stats.forget(("10.0.0.1", 5000), now=0.0, rate=10)
    stats.forget(("10.0.0.2", 5000), now=0.0, rate=1)
    assert (list(stats.sources), list(stats.owing)) == ([], ["10.0.0.1"])
    stats.expire(now=0.5, idle_s=30.0, rate=10)
    assert list(stats.owing) == ["10.0.0.1"]
    stats.expire(now=1.0, idle_s=30.0, rate=10)
    assert stats.owing == {}


def test_expire_forgets_idle_peers_oldest_first() -> None:
    """Peers last seen 40 s and 35 s ago go with a 30 s idle time; one seen 10 s ago stays."""
    stats = UDPListenerStats("udp", "127.0.0.1", 7)
    for port, seen in ((1, 60.0), (2, 65.0), (3, 90.0)):
        add_peer(stats, "10.0.0.1", 4000 + port, seen)
    stats.expire(now=100.0, idle_s=30.0)
    assert list(stats.peers) == [("10.0.0.1", 4003)]
    assert stats.snapshot().peers == 1


def test_kernel_drops_are_a_reason_but_neither_received_nor_in_the_dropped_total() -> None:
    """receive_buffer datagrams never reached echostat: sent = received - dropped still holds."""
    stats = UDPListenerStats("udp", "127.0.0.1", 7, off_table_datagrams=10, off_table_bytes=100)
    stats.dropped["source_rate"] = 3
    stats.receive_buffer_drops = 50
    snap = stats.snapshot()
    assert snap.dropped == {"source_rate": 3, "receive_buffer": 50}
    assert (snap.datagrams_received, snap.datagrams_sent, snap.dropped_total) == (10, 7, 3)


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object) -> None:
        self.sent.append(data)


def test_a_source_refused_for_its_rate_stays_refused_until_the_next_tick() -> None:
    """At 10 datagrams/s per source, 40 datagrams in one tick: its 10 tokens echo 10, 30 are
    dropped as source_rate, and one more is dropped even after tokens came back to the
    bucket; the next tick serves it again."""
    config = UDPConfig(max_datagrams_per_s_per_ip=10)
    stats, clock, transport = UDPListenerStats("udp", "127.0.0.1", 7), Clock(), _Transport()
    budget = ListenerBudget(config)
    # No socket: only an empty datagram would be sent through the socket itself.
    protocol = UDPEchoProtocol(None, stats, config, budget, clock)  # type: ignore[arg-type]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    source = ("10.0.0.1", 5000)
    for _ in range(40):
        protocol.datagram_received(b"x", source)
    assert len(transport.sent) == 10 and stats.dropped == {"source_rate": 30}
    stats.sources["10.0.0.1"].tokens = 5.0  # given back by another port of the source
    protocol.datagram_received(b"x", source)
    assert len(transport.sent) == 10 and stats.dropped == {"source_rate": 31}
    clock.advance()
    protocol.datagram_received(b"x", source)
    assert len(transport.sent) == 11
