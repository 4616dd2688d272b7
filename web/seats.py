"""Who holds the status side's connections, and whether the next one may have a seat.

A status connection takes a regular seat while fewer than `status.max_connections` are open
and its address holds fewer than `status.max_connections_per_ip`. Beyond either, it may take
one of `RESERVED_SEATS` kept for health checks and scrapes: such a connection gets one
request, answered only for `HEALTH_PATHS`, with a short header timeout, so a full status side
still tells an orchestrator and Prometheus that the instance is up. The reserve is bounded in
seats, per address and in time, so whoever fills it holds at most `RESERVED_SEATS`
descriptors for `RESERVED_HEADER_TIMEOUT_S` each and cannot push the status side past its
caps by more than that.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from echostat.server.accept import RateLimitedLog
from echostat.server.config import StatusConfig
from echostat.web.counters import StatusCounters, StatusRejectReason

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths a reserved seat may ask for."""

log = logging.getLogger(__name__)

RESERVED_SEATS = 16
"""Connections beyond the caps kept for `HEALTH_PATHS`: a few probers and scrapers at once."""

RESERVED_SEATS_PER_IP = 4
"""Reserved seats one address may hold, so a single client can't take the whole reserve."""

RESERVED_HEADER_TIMEOUT_S = 0.5
"""How long a reserved seat waits for its request's headers (or the header timeout, if
shorter): a prober sends them at once, a slow client loses the seat soon."""


class Closable(Protocol):
    """A status connection, as far as the buffer budget needs it."""

    def close(self) -> None: ...


Refusal = StatusRejectReason
"""Why a status connection or push stream was refused: the key of the cap it met."""


@dataclass
class Seats:
    """Open status connections by kind and address, the bytes queued for them, and the
    limits in force for the next connection (`limits`, swapped by a reload)."""

    limits: StatusConfig
    counters: StatusCounters
    _per_ip: Counter[str] = field(default_factory=Counter)
    _reserved: int = 0
    _reserved_per_ip: Counter[str] = field(default_factory=Counter)
    _refusals: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log, 10.0))
    _waiting: dict[Closable, None] = field(default_factory=dict)
    """Connections with bytes queued, the longest waiting first."""

    def over_cap(self, ip: str) -> Refusal | None:
        """The cap a new regular connection from `ip` would exceed, or None."""
        if self.counters.active - self._reserved >= self.limits.max_connections:
            return "max_connections"
        per_ip = self.limits.max_connections_per_ip
        if per_ip and self._per_ip[ip] >= per_ip:
            return "max_connections_per_ip"
        return None

    def reserve_free(self, ip: str) -> bool:
        """Whether `ip` may take a reserved seat now."""
        return self._reserved < RESERVED_SEATS and self._reserved_per_ip[ip] < RESERVED_SEATS_PER_IP

    def take(self, ip: str, reserved: bool) -> None:
        """A connection from `ip` is open, in a reserved seat or a regular one."""
        self.counters.active += 1
        if reserved:
            self._reserved += 1
            self._reserved_per_ip[ip] += 1
        else:
            self.counters.accepted += 1
            self._per_ip[ip] += 1

    def release(self, ip: str, reserved: bool) -> None:
        """The connection `take` counted is closed."""
        self.counters.active -= 1
        if reserved:
            self._reserved -= 1
            seats = self._reserved_per_ip
        else:
            seats = self._per_ip
        remaining = seats[ip] - 1
        if remaining:
            seats[ip] = remaining
        else:
            del seats[ip]

    def refuse(self, reason: Refusal, ip: str) -> None:
        """Count a refusal by `reason` and warn about it, at most every 10 s."""
        self.counters.rejected[reason] += 1
        self._refusals.warning(
            "status: refused %s: status.%s (%d) reached", ip, reason, limit_of(reason, self.limits)
        )

    def queued(self, connection: Closable, before: int, after: int) -> None:
        """`connection`'s queue went from `before` to `after` bytes."""
        self.counters.buffered_bytes += after - before
        if after and not before:
            self._waiting[connection] = None  # the newest to wait, last in the dict
        elif before and not after:
            del self._waiting[connection]

    def enforce_budget(self) -> None:
        """While the bytes queued exceed `status.max_buffered_bytes`, close the connection
        that has waited longest with bytes queued: the slowest reader goes first, not the
        client whose response just arrived and is draining into the kernel."""
        while self.counters.buffered_bytes > self.limits.max_buffered_bytes and self._waiting:
            oldest = next(iter(self._waiting))
            self.counters.closed_by_server["max_buffered_bytes"] += 1
            log.debug("status: closing a connection: max_buffered_bytes")
            oldest.close()  # its close releases its bytes and its place here


def limit_of(reason: Refusal, limits: StatusConfig) -> int:
    """The number the cap `reason` is set to in `limits`."""
    value: int = getattr(limits, reason)
    return value


def refusal_message(reason: Refusal, limit: int) -> str:
    """What a refused client is told: which cap, at what number, and to retry."""
    what = {
        "max_connections": "too many status connections",
        "max_connections_per_ip": "too many status connections from your address",
        "max_streams": "too many live streams",
    }[reason]
    return f"{what} (status.{reason} is {limit}); try again shortly"
