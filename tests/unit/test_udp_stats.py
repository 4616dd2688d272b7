"""The UDP registry parts without sockets: token buckets and the bounded peers table."""

from __future__ import annotations

from server.udp_stats import Peer, Source, TokenBucket, UDPListenerStats


def test_token_bucket_allows_a_second_of_burst_then_its_rate() -> None:
    """A bucket of 10/s passes 10 at once, refuses the 11th, and passes 5 more after 0.5 s."""
    bucket = TokenBucket(10, now=100.0)
    assert [bucket.take(100.0) for _ in range(11)] == [True] * 10 + [False]
    assert [bucket.take(100.5) for _ in range(6)] == [True] * 5 + [False]


def test_token_bucket_never_holds_more_than_its_capacity() -> None:
    """An hour of silence still only refills to capacity."""
    bucket = TokenBucket(1000, now=0.0, capacity=65507)
    assert bucket.take(3600.0, 65507)
    assert not bucket.take(3600.0, 1)


def add_peer(stats: UDPListenerStats, ip: str, port: int, now: float) -> None:
    source = stats.sources.setdefault(ip, Source(ip, None))
    source.peers += 1
    stats.peers[(ip, port)] = Peer(ip, port, source, now)


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
