"""The UDP side of the registry: per-listener datagram counters and the bounded peers table.

A UDP listener has no connections, so what the registry counts for it is datagrams, bytes,
drops by reason and "peers", the source addresses seen lately. The per-datagram cost is a
few integer additions and one dictionary lookup; like `server.stats`, nothing here imports
Tornado.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


class TokenBucket:
    """`rate_per_s` tokens a second, holding at most `capacity` (one second's worth by default)."""

    __slots__ = ("rate_per_s", "capacity", "tokens", "stamp")

    def __init__(self, rate_per_s: float, now: float, capacity: float | None = None) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = rate_per_s if capacity is None else capacity
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend `amount` tokens if the bucket holds them at time `now`; False if it doesn't."""
        tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


class Source:
    """One source IP address: its rate budget, shared by all its ports, and its drops."""

    __slots__ = ("ip", "bucket", "peers", "dropped")

    def __init__(self, ip: str, bucket: TokenBucket | None) -> None:
        self.ip = ip
        self.bucket = bucket
        self.peers = 0
        self.dropped = 0


class Peer:
    """One source address (IP and port) in the peers table; times are monotonic seconds."""

    __slots__ = (
        "ip",
        "port",
        "source",
        "first_seen",
        "last_seen",
        "queued_at",
        "datagrams",
        "bytes",
        "dropped",
        "dropped_bytes",
    )

    def __init__(self, ip: str, port: int, source: Source, now: float) -> None:
        self.ip = ip
        self.port = port
        self.source = source
        self.first_seen = now
        self.last_seen = now
        self.queued_at = now
        """When the peer last moved to the young end of the table (see `UDPListenerStats`)."""
        self.datagrams = 0
        self.bytes = 0
        self.dropped = 0
        self.dropped_bytes = 0

    @property
    def address(self) -> str:
        """The source as ``host:port``, or ``[host]:port`` for IPv6."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(slots=True)
class UDPListenerStats:
    """Counters and peers of one UDP listener; `port` is the bound port, never 0.

    `peers` is ordered from least to most recently seen, to within `REQUEUE_S`: a peer moves
    to the end at most that often, so the oldest is always first, for eviction and expiry.
    """

    name: str
    host: str
    port: int
    datagrams_received: int = 0
    datagrams_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    peers_evicted: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    peers: dict[Any, Peer] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    unlisted_drops: Counter[str] = field(default_factory=Counter)
    """Drops by source IP of datagrams refused before the peers table (privileged ports)."""

    def forget(self, key: Any) -> None:
        """Remove the peer at `key`, and its source once no peer of it remains."""
        peer = self.peers.pop(key)
        peer.source.peers -= 1
        if not peer.source.peers:
            del self.sources[peer.ip]

    def expire(self, now: float, idle_s: float) -> None:
        """Forget the peers not seen for `idle_s` (oldest first, so this stops early)."""
        peers = self.peers
        while peers:
            key = next(iter(peers))
            if now - peers[key].last_seen < idle_s:
                return
            self.forget(key)

    def snapshot(self) -> UDPListenerSnapshot:
        return UDPListenerSnapshot(
            name=self.name,
            host=self.host,
            port=self.port,
            datagrams_received=self.datagrams_received,
            datagrams_sent=self.datagrams_sent,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            dropped=dict(self.dropped),
            peers=len(self.peers),
            peers_evicted=self.peers_evicted,
        )


REQUEUE_S = 1.0
"""How stale a peer's place in the table may get before a datagram moves it to the end."""


@dataclass(frozen=True)
class UDPListenerSnapshot:
    name: str
    host: str
    port: int
    datagrams_received: int
    datagrams_sent: int
    bytes_received: int
    bytes_sent: int
    dropped: dict[str, int]
    peers: int
    peers_evicted: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True)
class PeerSnapshot:
    """One row of the peers table; `first_seen` and `last_seen` are Unix times."""

    peer: str
    listener: str
    worker: int
    first_seen: float
    last_seen: float
    datagrams_received: int
    datagrams_sent: int
    bytes_received: int
    bytes_sent: int


def peer_snapshot(
    peer: Peer, listener: str, worker: int, now: float, wall_now: float
) -> PeerSnapshot:
    """`peer` as a row, its monotonic times turned into wall-clock times."""
    return PeerSnapshot(
        peer=peer.address,
        listener=listener,
        worker=worker,
        first_seen=wall_now - (now - peer.first_seen),
        last_seen=wall_now - (now - peer.last_seen),
        datagrams_received=peer.datagrams,
        datagrams_sent=peer.datagrams - peer.dropped,
        bytes_received=peer.bytes,
        bytes_sent=peer.bytes - peer.dropped_bytes,
    )
