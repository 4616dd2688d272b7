"""UDP echo (RFC 862): every datagram goes back to its source, within reflection-safe bounds.

`UDPEchoServer` is the datagram sibling of `EchoServer`: it serves bound UDP sockets on the
same event loop through asyncio datagram endpoints. A source address can be forged, which
makes any UDP echo a candidate reflector; so by default datagrams from privileged source
ports (where echo, chargen and other services that answer every datagram live) are dropped,
and what is sent back is bounded per source IP, per listener and in bytes per second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
import typing
from collections.abc import Iterable

from tornado.ioloop import PeriodicCallback

from server.config import UDPConfig
from server.udp_stats import REQUEUE_S, Peer, Source, TokenBucket, UDPListenerStats

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 65507
"""The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers)."""

_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""Asked of the kernel for each UDP socket, so bursts wait in the kernel, not in a drop."""

_HOUSEKEEPING_S = 1.0
"""How often idle peers are forgotten and drops are reported."""

_UNLISTED_SOURCES = 100
"""Sources dropped before they reach the peers table, kept for naming the busiest of them."""

_WARNING_INTERVAL_S = 10.0
"""At most one drop warning per listener this often."""


class UDPEchoProtocol(asyncio.DatagramProtocol):
    """Sends every datagram back to where it came from, unless a safety bound says drop.

    One per socket; the sockets of one listener share its `UDPListenerStats` (counters and
    peers) and its listener-wide buckets.
    """

    def __init__(
        self,
        sock: socket.socket,
        stats: UDPListenerStats,
        config: UDPConfig,
        datagrams: TokenBucket | None,
        send_bytes: TokenBucket | None,
    ) -> None:
        self._sock = sock
        self._stats = stats
        self._config = config
        self._datagrams = datagrams
        self._send_bytes = send_bytes
        self._transport: asyncio.DatagramTransport | None = None
        self._send_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.DatagramTransport without subclassing it.
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | typing.Any, int]) -> None:
        stats = self._stats
        size = len(data)
        stats.datagrams_received += 1
        stats.bytes_received += size
        ip, port = addr[0], addr[1]
        if port < 1024 and not self._config.allow_privileged_source_ports:
            self._drop("privileged_source_port", None, size)
            if len(stats.unlisted_drops) < _UNLISTED_SOURCES or ip in stats.unlisted_drops:
                stats.unlisted_drops[ip] += 1
            return
        now = time.monotonic()
        peer = stats.peers.get(addr)
        if peer is None:
            peer = self._new_peer(addr, ip, port, now)
        elif now - peer.queued_at > REQUEUE_S:
            del stats.peers[addr]
            stats.peers[addr] = peer
            peer.queued_at = now
        peer.last_seen = now
        peer.datagrams += 1
        peer.bytes += size
        reason = self._over_limit(peer, now, size)
        if reason is not None:
            self._drop(reason, peer, size)
            return
        if size:
            self._transport.sendto(data, addr)  # type: ignore[union-attr]
        elif not self._send_empty(addr):
            self._drop("send_failed", peer, size)
            return
        stats.datagrams_sent += 1
        stats.bytes_sent += size

    def error_received(self, exc: Exception) -> None:
        # Linux reports an ICMP "port unreachable" for an earlier echo here; the source has
        # gone away, which is the client's business.
        log.debug("udp %s: %s", self._stats.name, exc)

    def _send_empty(self, addr: typing.Any) -> bool:
        """Echo an empty datagram, which asyncio's and uvloop's transports silently skip."""
        try:
            self._sock.sendto(b"", addr)
        except OSError as exc:  # EAGAIN with a full send buffer, or the source is unreachable
            log.debug("udp %s: cannot echo to %s: %s", self._stats.name, addr, exc)
            return False
        return True

    def pause_writing(self) -> None:
        self._send_paused = True

    def resume_writing(self) -> None:
        self._send_paused = False

    def _over_limit(self, peer: Peer, now: float, size: int) -> str | None:
        """The name of the bound this echo would exceed, if any; spends its tokens if not."""
        bucket = peer.source.bucket
        if bucket is not None and not bucket.take(now):
            return "source_rate"
        if self._datagrams is not None and not self._datagrams.take(now):
            return "listener_rate"
        if self._send_bytes is not None and not self._send_bytes.take(now, size):
            return "bytes_rate"
        if self._send_paused:
            return "send_buffer_full"
        return None

    def _new_peer(self, addr: typing.Any, ip: str, port: int, now: float) -> Peer:
        """Add a peer, evicting the least recently seen one if the table is full."""
        stats = self._stats
        if len(stats.peers) >= self._config.max_peers:
            stats.forget(next(iter(stats.peers)))
            stats.peers_evicted += 1
        source = stats.sources.get(ip)
        if source is None:
            rate = self._config.max_datagrams_per_s_per_ip
            source = Source(ip, TokenBucket(rate, now) if rate else None)
            stats.sources[ip] = source
        source.peers += 1
        peer = stats.peers[addr] = Peer(ip, port, source, now)
        return peer

    def _drop(self, reason: str, peer: Peer | None, size: int) -> None:
        self._stats.dropped[reason] += 1
        if peer is not None:
            peer.dropped += 1
            peer.dropped_bytes += size
            peer.source.dropped += 1


class UDPEchoServer:
    """Serves UDP listeners: `add_sockets` per listener, `stop` once (safe to call twice).

    Once a second it forgets peers idle for `udp.peer_idle_s` and, at most every ten
    seconds per listener, logs a warning about drops that names the busiest source.
    """

    def __init__(self, config: UDPConfig) -> None:
        self.config = config
        self._transports: list[asyncio.BaseTransport] = []
        self._listeners: list[UDPListenerStats] = []
        self._reported: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}
        self._housekeeping = PeriodicCallback(self._sweep, _HOUSEKEEPING_S * 1000)

    async def add_sockets(self, sockets: Iterable[socket.socket], stats: UDPListenerStats) -> None:
        """Echo on the bound UDP `sockets`, counting under `stats`; the sockets now belong to
        their transports."""
        config = self.config
        now = time.monotonic()
        datagrams = (
            TokenBucket(config.max_datagrams_per_s, now) if config.max_datagrams_per_s else None
        )
        send_bytes = None
        if config.max_bytes_per_s:
            # At least one largest datagram must fit, or large ones could never pass.
            capacity = max(config.max_bytes_per_s, MAX_DATAGRAM_BYTES)
            send_bytes = TokenBucket(config.max_bytes_per_s, now, capacity)
        loop = asyncio.get_running_loop()
        for sock in sockets:
            _enlarge_receive_buffer(sock)
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(UDPEchoProtocol, sock, stats, config, datagrams, send_bytes),
                sock=sock,
            )
            self._transports.append(transport)
        self._listeners.append(stats)
        if not self._housekeeping.is_running():
            self._housekeeping.start()

    def stop(self) -> None:
        """Close every UDP socket; datagrams in flight are simply not echoed."""
        self._housekeeping.stop()
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    def _sweep(self) -> None:
        now = time.monotonic()
        for stats in self._listeners:
            stats.expire(now, self.config.peer_idle_s)
            self._report_drops(stats, now)

    def _report_drops(self, stats: UDPListenerStats, now: float) -> None:
        dropped = sum(stats.dropped.values())
        new = dropped - self._reported.get(stats.name, 0)
        if not new or now - self._warned_at.get(stats.name, -_WARNING_INTERVAL_S) < (
            _WARNING_INTERVAL_S
        ):
            return
        self._reported[stats.name] = dropped
        self._warned_at[stats.name] = now
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.dropped.items()))
        by_ip = stats.unlisted_drops
        for source in stats.sources.values():
            if source.dropped:
                by_ip[source.ip] += source.dropped
                source.dropped = 0
        busiest = by_ip.most_common(1)
        named = f"; busiest source {busiest[0][0]} ({busiest[0][1]} dropped)" if busiest else ""
        by_ip.clear()
        log.warning(
            "udp listener %s: dropped %d datagrams since the last report (since start: %s)%s",
            stats.name,
            new,
            reasons,
            named,
        )


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
    except OSError:
        pass  # the kernel caps it at net.core.rmem_max anyway; the default still works
