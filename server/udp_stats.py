"""The UDP side of the registry: per-listener datagram counters and the bounded peers table.

A UDP listener has no connections, so what the registry counts for it is datagrams, bytes,
drops by reason (echostat's, and the kernel's before echostat could read a datagram) and
"peers", the source addresses seen lately. An echoed datagram costs one
dictionary lookup and two integer subtractions: it spends one of its peer's `credit`s and
its size in `byte_credit`; the counts follow from what was granted and what is left. Like
`server.registry`, nothing here imports Tornado.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

DropReason = Literal[
    "privileged_source_port",
    "source_rate",
    "listener_rate",
    "bytes_rate",
    "send_buffer_full",
    "send_failed",
]
"""Why a datagram was not echoed."""

DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)
"""Every drop reason, so that metrics show each at 0 before it happens."""

RECEIVE_BUFFER = "receive_buffer"
"""The drop reason of datagrams the kernel discarded for a full receive buffer, before echostat
read them: listed with the other reasons, but in neither `datagrams_received` nor the total of
datagrams received and not echoed."""


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

    def owes(self, now: float, rate: float) -> bool:
        """Whether the bucket is still short of full at `now`, refilling at `rate` tokens a
        second up to one second's worth (0: no limit, never short)."""
        return bool(rate) and self.tokens + rate * (now - self.refilled_at) < rate


class Peer:
    """One source address (IP and port) in the peers table; times are monotonic seconds.

    `datagrams` and `bytes` count what arrived until credit was last granted; the datagrams
    echoed since are the credit spent (`granted - credit`, and the same in bytes).
    """

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
        "answered_short",
        "credit",
        "granted",
        "byte_credit",
        "byte_granted",
        "last_grant",
        "refused_tick",
        "refused_for",
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
        self.answered_short = 0
        """Bytes by which path reports sent to it were shorter than its report requests."""
        self.credit = self.granted = 0
        self.byte_credit = self.byte_granted = 0
        self.last_grant = 0
        """The size of the latest grant, which the next one in the same tick doubles."""
        self.refused_tick = -1
        self.refused_for = ""
        """The tick in which a rate bound refused this peer credit, and that bound's name:
        its datagrams are dropped for the rest of that tick without asking the buckets."""

    @property
    def datagrams_received(self) -> int:
        return self.datagrams + self.granted - self.credit

    @property
    def bytes_received(self) -> int:
        return self.bytes + self.byte_granted - self.byte_credit

    def settle(self) -> tuple[int, int]:
        """Count the credit spent as received; return the unspent (datagrams, bytes)."""
        self.datagrams += self.granted - self.credit
        self.bytes += self.byte_granted - self.byte_credit
        unspent = self.credit, self.byte_credit
        self.credit = self.granted = self.byte_credit = self.byte_granted = 0
        return unspent

    def grant(self, datagrams: int, byte_count: int) -> None:
        """Allow this many more echoes and bytes (after `settle`)."""
        self.credit = self.granted = datagrams
        self.byte_credit = self.byte_granted = byte_count

    @property
    def address(self) -> str:
        """The source as ``host:port``, or ``[host]:port`` for IPv6."""
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


@dataclass(slots=True)
class UDPListenerStats:
    """Counters and peers of one UDP listener; `port` is the bound port, never 0.

    What arrived is the sum over the peers plus `off_table_*`: what peers no longer in the
    table had received, and what was dropped before reaching it; what was sent is what
    arrived minus what was dropped. `peers` is ordered from least to most recently seen (a
    peer moves to the end with its first datagram in each tick), so the oldest is first, for
    eviction and expiry.
    """

    name: str
    host: str
    port: int
    off_table_datagrams: int = 0
    off_table_bytes: int = 0
    dropped_bytes: int = 0
    peers_evicted: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    peers: dict[Any, Peer] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    owing: dict[str, Source] = field(default_factory=dict)
    """Sources with no peer left whose bucket is not full again yet, oldest first: kept until
    it is, so that pushing a source's peers out of the table (by sending from many other
    addresses) never hands it a full bucket again. Each leaves within a second."""
    unlisted_drops: Counter[str] = field(default_factory=Counter)
    """Drops by source IP of datagrams refused before the peers table (privileged ports)."""
    answered_short: int = 0
    """Bytes by which path reports were shorter than the requests they answered: what was
    sent is what arrived, less what was dropped, less this."""
    receive_buffer_drops: int = 0
    """Datagrams the kernel dropped for this listener's sockets before echostat could read
    them (a full receive buffer), as last read from the kernel's per-socket counters."""

    def dropped_by_reason(self) -> dict[str, int]:
        """Drops by reason: echostat's own, and the kernel's as ``receive_buffer``."""
        dropped = dict(self.dropped)
        if self.receive_buffer_drops:
            dropped[RECEIVE_BUFFER] = self.receive_buffer_drops
        return dropped

    def answered_shorter(self, key: Any, saved: int) -> None:
        """A path report `saved` bytes shorter than its request went to the peer at `key`."""
        self.answered_short += saved
        if (peer := self.peers.get(key)) is not None:
            peer.answered_short += saved

    def forget(self, key: Any, now: float = 0.0, rate: float = 0.0) -> None:
        """Remove the peer at `key`, and its source once no peer of it remains; a source
        whose bucket (refilling at `rate`) is short of full at `now` waits in `owing`."""
        peer = self.peers.pop(key)
        self.off_table_datagrams += peer.datagrams_received
        self.off_table_bytes += peer.bytes_received
        source = peer.source
        source.peers -= 1
        if not source.peers:
            del self.sources[peer.ip]
            if source.owes(now, rate):
                self.owing[peer.ip] = source

    def expire(self, now: float, idle_s: float, rate: float = 0.0) -> None:
        """Let go of the sources in `owing` whose buckets (refilling at `rate`) are full again,
        and forget the peers not seen for `idle_s`; both oldest first, so this stops early."""
        owing = self.owing
        while owing and not (source := next(iter(owing.values()))).owes(now, rate):
            del owing[source.ip]
        peers = self.peers
        while peers:
            key = next(iter(peers))
            if now - peers[key].last_seen < idle_s:
                return
            self.forget(key, now, rate)

    def snapshot(self) -> UDPListenerSnapshot:
        datagrams, byte_count = self.off_table_datagrams, self.off_table_bytes
        for peer in self.peers.values():
            datagrams += peer.datagrams_received
            byte_count += peer.bytes_received
        return UDPListenerSnapshot(
            name=self.name,
            host=self.host,
            port=self.port,
            datagrams_received=datagrams,
            datagrams_sent=datagrams - sum(self.dropped.values()),
            bytes_received=byte_count,
            bytes_sent=byte_count - self.dropped_bytes - self.answered_short,
            dropped=self.dropped_by_reason(),
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
        """Datagrams received and not echoed: every reason but the kernel's `RECEIVE_BUFFER`."""
        return sum(count for reason, count in self.dropped.items() if reason != RECEIVE_BUFFER)


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
        datagrams_received=peer.datagrams_received,
        datagrams_sent=peer.datagrams_received - peer.dropped,
        bytes_received=peer.bytes_received,
        bytes_sent=peer.bytes_received - peer.dropped_bytes - peer.answered_short,
    )
