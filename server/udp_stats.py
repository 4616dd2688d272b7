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


class Source:
    """One source IP address: its token bucket, shared by all its ports, and its drops.

    The bucket is refilled lazily, in the first tick in which the source sends again, for
    the time since `refilled_at`.
    """

    __slots__ = ("ip", "tokens", "refilled_at", "peers", "dropped")

    def __init__(self, ip: str, tokens: float, refilled_at: float) -> None:
        self.ip = ip
        self.tokens = tokens
        self.refilled_at = refilled_at
        self.peers = 0
        self.dropped = 0


class Peer:
    """One source address (IP and port) in the peers table; times are monotonic seconds."""

    __slots__ = (
        "ip",
        "port",
        "source",
        "tick",
        "first_seen",
        "last_seen",
        "datagrams",
        "bytes",
        "dropped",
        "dropped_bytes",
    )

    def __init__(self, ip: str, port: int, source: Source, tick: int, now: float) -> None:
        self.ip = ip
        self.port = port
        self.source = source
        self.tick = tick
        """The tick of its latest datagram; `last_seen` is that tick's time."""
        self.first_seen = now
        self.last_seen = now
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

    Only what arrives is counted per datagram; what was sent is what arrived minus what was
    dropped. `peers` is ordered from least to most recently seen (a peer moves to the end
    with its first datagram in each tick), so the oldest is first, for eviction and expiry.
    """

    name: str
    host: str
    port: int
    datagrams_received: int = 0
    bytes_received: int = 0
    dropped_bytes: int = 0
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
            datagrams_sent=self.datagrams_received - sum(self.dropped.values()),
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_received - self.dropped_bytes,
            dropped=dict(self.dropped),
            peers=len(self.peers),
            peers_evicted=self.peers_evicted,
        )


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
