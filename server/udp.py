"""UDP echo (RFC 862): every datagram goes back to its source, within reflection-safe bounds.

`UDPEchoServer` is the datagram sibling of `EchoServer`: it serves bound UDP sockets on the
same event loop through asyncio datagram endpoints. A source address can be forged, which
makes any UDP echo a candidate reflector; so by default datagrams from privileged source
ports (where echo, chargen and other services that answer every datagram live) are dropped,
and what is sent back is bounded per source IP, per listener and in bytes per second.

Time on this path is a coarse tick (`TICK_S`) advanced by a timer. A peer's first datagram
in a tick refreshes its place in the peers table and takes credit for a few echoes from the
token buckets of its source IP and of the listener; every further datagram in that tick
spends credit, which costs a dictionary lookup and two integer subtractions. A peer that a
rate bound refused is refused for the rest of the tick without asking the buckets again, so
a flood from one source is read and dropped cheaply, and the socket drains fast for the
datagrams of the other sources behind it.

What is lost in the kernel anyway (a full receive buffer) is counted per socket by the
kernel; every tick the server reads those counters (`server.socket_memory`) into the
listener's `receive_buffer_drops`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import socket
import time
import typing
from collections.abc import Iterable

from tornado.ioloop import PeriodicCallback

from echostat.server.config import UDPConfig
from echostat.server.socket_memory import BUFFER_BYTES, SO_MEMINFO, decode_drops
from echostat.server.udp_report import ReportingTransport
from echostat.server.udp_stats import DropReason, Peer, Source, UDPListenerStats
from echostat.server.wording import count_of

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 65527
"""The largest UDP payload: over IPv6, 65,535 minus the UDP header (over IPv4 the IP header
takes 20 bytes more), so the bytes budget always holds one datagram of any size that arrives."""

TICK_S = 0.1
"""The clock of the UDP path: token buckets refill and peers' last-seen times move this often."""

_TICKS_PER_SWEEP = 10
"""Idle peers are forgotten and drops reported every this many ticks (once a second)."""

_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
"""Asked of the kernel for each UDP socket, so bursts wait in the kernel, not in a drop."""

_MAX_GRANT = 64
"""The most datagrams of credit a peer is given at once."""

_UNLISTED_SOURCES = 100
"""Sources dropped before they reach the peers table, kept for naming the busiest of them."""

_WARNING_INTERVAL_S = 10.0
"""At most one drop warning per listener this often."""

_RATE_BOUNDS = frozenset({"source_rate", "listener_rate"})
"""Refusals that hold for the rest of a tick: their buckets refill only when it ends."""


class Clock:
    """The current tick and its monotonic time, shared by every UDP endpoint of a process."""

    __slots__ = ("tick", "now")

    def __init__(self) -> None:
        self.tick = 0
        self.now = time.monotonic()

    def advance(self) -> float:
        """Start the next tick; return the seconds since the previous one."""
        now = time.monotonic()
        elapsed_s, self.now = now - self.now, now
        self.tick += 1
        return elapsed_s


class ListenerBudget:
    """What one listener may still send: datagrams and bytes, refilled every tick.

    Both are token buckets holding one second's worth (bytes: at least one largest
    datagram); a limit of 0 is an endless budget.
    """

    __slots__ = ("datagrams", "bytes", "_rates", "_capacities")

    def __init__(self, config: UDPConfig) -> None:
        rates = (config.max_datagrams_per_s, config.max_bytes_per_s)
        self._rates = rates
        self._capacities = (
            float(rates[0] or math.inf),
            float(max(rates[1], MAX_DATAGRAM_BYTES) if rates[1] else math.inf),
        )
        self.datagrams, self.bytes = self._capacities

    def give_back(self, datagrams: int, byte_count: int) -> None:
        """Return credit granted but not spent."""
        self.datagrams = min(self._capacities[0], self.datagrams + datagrams)
        self.bytes = min(self._capacities[1], self.bytes + byte_count)

    def refill(self, elapsed_s: float) -> None:
        (datagram_rate, byte_rate), (datagram_cap, byte_cap) = self._rates, self._capacities
        self.datagrams = min(datagram_cap, self.datagrams + datagram_rate * elapsed_s)
        self.bytes = min(byte_cap, self.bytes + byte_rate * elapsed_s)


class UDPEchoProtocol(asyncio.DatagramProtocol):
    """Sends every datagram back to where it came from, unless a safety bound says drop.

    One per socket; the sockets of one listener share its `UDPListenerStats` (counters and
    peers) and its `ListenerBudget`.
    """

    def __init__(
        self,
        sock: socket.socket,
        stats: UDPListenerStats,
        config: UDPConfig,
        budget: ListenerBudget,
        clock: Clock,
    ) -> None:
        self._sock = sock
        self._stats = stats
        self._peers = stats.peers
        self._config = config
        self._budget = budget
        self._clock = clock
        self._source_rate = config.max_datagrams_per_s_per_ip
        self._source_capacity = float(self._source_rate or math.inf)
        self._transport: asyncio.DatagramTransport | None = None
        self._send_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.DatagramTransport without subclassing it.
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | typing.Any, int]) -> None:
        peer = self._peers.get(addr)
        size = len(data)
        if (
            peer is not None
            and peer.tick == self._clock.tick
            and peer.credit
            and peer.byte_credit >= size > 0
            and not self._send_paused
        ):
            peer.credit -= 1
            peer.byte_credit -= size
            self._transport.sendto(data, addr)  # type: ignore[union-attr]
        else:
            self._echo_or_drop(data, addr, peer, size)

    def error_received(self, exc: Exception) -> None:
        # Linux reports an ICMP "port unreachable" for an earlier echo here; the source has
        # gone away, which is the client's business.
        log.debug("udp %s: %s", self._stats.name, exc)

    def pause_writing(self) -> None:
        self._send_paused = True

    def resume_writing(self) -> None:
        self._send_paused = False

    def _echo_or_drop(self, data: bytes, addr: typing.Any, peer: Peer | None, size: int) -> None:
        """The slow path: a new peer, a new tick, credit spent, an empty datagram or a full
        send buffer. Grants fresh credit within the bounds and echoes, or counts a drop."""
        if peer is None:
            if addr[1] < 1024 and not self._config.allow_privileged_source_ports:
                self._drop_unlisted(addr[0], size)
                return
            peer = self._new_peer(addr)
        if peer.refused_tick == self._clock.tick:
            reason: str | None = peer.refused_for
        else:
            reason = self._regrant(peer, addr, size)
            if reason in _RATE_BOUNDS:
                peer.refused_tick, peer.refused_for = self._clock.tick, reason
        if reason is None and not size and not self._send_empty(addr):
            reason = "send_failed"
        if reason is not None:
            peer.datagrams += 1
            peer.bytes += size
            peer.dropped += 1
            peer.dropped_bytes += size
            peer.source.dropped += 1
            self._stats.dropped[reason] += 1
            self._stats.dropped_bytes += size
            return
        peer.credit -= 1
        peer.byte_credit -= size
        if size:
            self._transport.sendto(data, addr)  # type: ignore[union-attr]

    def _regrant(self, peer: Peer, addr: typing.Any, size: int) -> DropReason | None:
        """Give `peer` credit for this datagram and a few more, taken from its source's and
        the listener's budgets; or the name of the bound that has none left.

        The first grant in a tick is one datagram, doubling with each further one up to
        `_MAX_GRANT`, so a peer holds little credit it won't use; what it didn't use goes
        back to the budgets here.
        """
        clock, source, budget = self._clock, peer.source, self._budget
        unspent, unspent_bytes = peer.settle()
        source.tokens = min(self._source_capacity, source.tokens + unspent)
        budget.give_back(unspent, unspent_bytes)
        if peer.tick != clock.tick:
            self._requeue(peer, addr)
            peer.last_grant = 0
        wanted = min(_MAX_GRANT, max(1, 2 * peer.last_grant))
        if source.refilled_at != clock.now:
            refill = self._source_rate * (clock.now - source.refilled_at)
            source.tokens = min(self._source_capacity, source.tokens + refill)
            source.refilled_at = clock.now
        if source.tokens < 1:
            return "source_rate"
        if budget.datagrams < 1:
            return "listener_rate"
        if budget.bytes < size:
            return "bytes_rate"
        if self._send_paused:
            return "send_buffer_full"
        count = int(min(wanted, source.tokens, budget.datagrams))
        byte_count = int(min(budget.bytes, max(count * size, size)))
        source.tokens -= count
        budget.datagrams -= count
        budget.bytes -= byte_count
        peer.grant(count, byte_count)
        peer.last_grant = count
        return None

    def _requeue(self, peer: Peer, addr: typing.Any) -> None:
        """The peer's first datagram in this tick: it moves to the young end of the table."""
        peers = self._peers
        del peers[addr]
        peers[addr] = peer
        peer.tick = self._clock.tick
        peer.last_seen = self._clock.now

    def _new_peer(self, addr: typing.Any) -> Peer:
        """Add a peer, evicting the least recently seen one if the table is full."""
        stats, clock = self._stats, self._clock
        if len(stats.peers) >= self._config.max_peers:
            stats.forget(next(iter(stats.peers)), clock.now, self._source_rate)
            stats.peers_evicted += 1
        ip = addr[0]
        source = stats.sources.get(ip)
        if source is None:
            # One that still owes tokens comes back with its bucket as it left it.
            source = stats.owing.pop(ip, None) or Source(ip, self._source_capacity, clock.now)
            stats.sources[ip] = source
        source.peers += 1
        peer = stats.peers[addr] = Peer(ip, addr[1], source, clock.tick, clock.now)
        return peer

    def _send_empty(self, addr: typing.Any) -> bool:
        """Echo an empty datagram, which asyncio's and uvloop's transports silently skip."""
        try:
            self._sock.sendto(b"", addr)
        except OSError as exc:  # EAGAIN with a full send buffer, or the source is unreachable
            log.debug("udp %s: cannot echo to %s: %s", self._stats.name, addr, exc)
            return False
        return True

    def _drop_unlisted(self, ip: str, size: int) -> None:
        stats = self._stats
        stats.dropped["privileged_source_port"] += 1
        stats.dropped_bytes += size
        stats.off_table_datagrams += 1
        stats.off_table_bytes += size
        if len(stats.unlisted_drops) < _UNLISTED_SOURCES or ip in stats.unlisted_drops:
            stats.unlisted_drops[ip] += 1


class UDPEchoServer:
    """Serves UDP listeners: `add_sockets` per listener, `stop` once (safe to call twice).

    Every tick it refills the listeners' budgets; once a second it forgets peers idle for
    `udp.peer_idle_s` and, at most every ten seconds per listener, logs a warning about
    drops that names the busiest source.
    """

    def __init__(self, config: UDPConfig) -> None:
        self.config = config
        self.clock = Clock()
        self._transports: list[asyncio.BaseTransport] = []
        self._listeners: list[tuple[UDPListenerStats, ListenerBudget]] = []
        self._sockets: dict[str, list[socket.socket]] = {}
        """Each listener's sockets by name, whose kernel drop counters are read every tick."""
        self._reported: dict[str, int] = {}
        self._warned_at: dict[str, float] = {}
        self._ticker = PeriodicCallback(self._tick, TICK_S * 1000)

    async def add_sockets(
        self, sockets: Iterable[socket.socket], stats: UDPListenerStats, report: bool = False
    ) -> None:
        """Echo on the bound UDP `sockets`, counting under `stats`, answering report requests
        if `report`; the sockets now belong to their transports."""
        budget = ListenerBudget(self.config)
        loop = asyncio.get_running_loop()
        for sock in sockets:
            _enlarge_receive_buffer(sock)
            protocol = functools.partial(
                UDPEchoProtocol, sock, stats, self.config, budget, self.clock
            )
            if report:
                transport: asyncio.BaseTransport = ReportingTransport(
                    loop, sock, protocol(), stats.answered_shorter
                )
            else:
                transport, _ = await loop.create_datagram_endpoint(protocol, sock=sock)
            self._transports.append(transport)
        self._listeners.append((stats, budget))
        self._sockets[stats.name] = list(sockets)
        if not self._ticker.is_running():
            self._ticker.start()

    def stop(self) -> None:
        """Close every UDP socket; datagrams in flight are simply not echoed."""
        self._ticker.stop()
        for stats, _ in self._listeners:
            self._read_kernel_drops(stats)
        self._sockets.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    def _tick(self) -> None:
        elapsed_s = self.clock.advance()
        sweep = self.clock.tick % _TICKS_PER_SWEEP == 0
        for stats, budget in self._listeners:
            budget.refill(elapsed_s)
            self._read_kernel_drops(stats)
            if sweep:
                rate = self.config.max_datagrams_per_s_per_ip
                stats.expire(self.clock.now, self.config.peer_idle_s, rate)
                self._report_drops(stats, self.clock.now)

    def _read_kernel_drops(self, stats: UDPListenerStats) -> None:
        """Sum the kernel's drop counters of `stats`' sockets into `receive_buffer_drops`."""
        drops = read_kernel_drops(self._sockets.get(stats.name, ()))
        if drops is not None:
            stats.receive_buffer_drops = drops

    def _report_drops(self, stats: UDPListenerStats, now: float) -> None:
        by_reason = stats.dropped_by_reason()
        dropped = sum(by_reason.values())
        new = dropped - self._reported.get(stats.name, 0)
        last = self._warned_at.get(stats.name, -_WARNING_INTERVAL_S)
        if not new or now - last < _WARNING_INTERVAL_S:
            return
        self._reported[stats.name] = dropped
        self._warned_at[stats.name] = now
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items()))
        by_ip = stats.unlisted_drops
        for source in stats.sources.values():
            if source.dropped:
                by_ip[source.ip] += source.dropped
                source.dropped = 0
        busiest = by_ip.most_common(1)
        named = f"; busiest source {busiest[0][0]} ({busiest[0][1]} dropped)" if busiest else ""
        by_ip.clear()
        log.warning(
            "udp listener %s: dropped %s since the last report (since start: %s)%s",
            stats.name,
            count_of(new, "datagram"),
            reasons,
            named,
        )


def read_kernel_drops(sockets: Iterable[socket.socket]) -> int | None:
    """The sum of the kernel's drop counters of `sockets` (each counts since it was bound), or
    None where the kernel keeps none."""
    if SO_MEMINFO is None:
        return None
    total = 0
    for sock in sockets:
        try:
            drops = decode_drops(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, BUFFER_BYTES))
        except OSError:  # a kernel before 4.12: nothing to count
            return None
        total += drops or 0
    return total


def _enlarge_receive_buffer(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
    except OSError:
        pass  # the kernel caps it at net.core.rmem_max anyway; the default still works
