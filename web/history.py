"""Rates and the recent past, derived from consecutive stats snapshots.

The feed hands every tick's snapshot to a `History`; it turns counter differences into
per-second rates and keeps the last few minutes of points for the dashboard's charts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from echostat.server.snapshots import StatsSnapshot


@dataclass(frozen=True)
class Rates:
    """Per-second rates over `interval_s`, the time between two snapshots (0 at first)."""

    interval_s: float = 0.0
    connections_per_s: float = 0.0
    bytes_received_per_s: float = 0.0
    bytes_sent_per_s: float = 0.0
    retransmits_per_s: float = 0.0
    datagrams_received_per_s: float = 0.0
    datagrams_sent_per_s: float = 0.0
    datagrams_dropped_per_s: float = 0.0

    def published(self, name: str) -> float:
        """Rate `name` rounded as the API and the push channel publish it."""
        value: float = getattr(self, name)
        return round(value, _PUBLISHED_DIGITS[name])


_PUBLISHED_DIGITS = {
    "interval_s": 3,
    "connections_per_s": 3,
    "bytes_received_per_s": 1,
    "bytes_sent_per_s": 1,
    "retransmits_per_s": 3,
    "datagrams_received_per_s": 1,
    "datagrams_sent_per_s": 1,
    "datagrams_dropped_per_s": 1,
}
"""Decimal places of each `Rates` field as published: bytes and datagrams need no finer."""

_CHARTED = tuple(field.name for field in fields(Rates) if field.name != "interval_s")
"""Every rate is kept for the charts, as a column of the history document."""


@dataclass(frozen=True)
class _Point:
    taken_at: float
    active: int
    rates: Rates


class History:
    """The last `capacity` snapshots reduced to chart points; `add` returns the latest rates."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rates = Rates()
        self._points: deque[_Point] = deque(maxlen=capacity)
        self._previous: StatsSnapshot | None = None

    def add(self, snap: StatsSnapshot) -> Rates:
        """Record `snap`; rates compare it with the snapshot added before it."""
        previous, self._previous = self._previous, snap
        if previous is not None and snap.uptime_seconds > previous.uptime_seconds:
            interval_s = snap.uptime_seconds - previous.uptime_seconds
            self.rates = Rates(
                interval_s=interval_s,
                connections_per_s=(snap.accepted - previous.accepted) / interval_s,
                bytes_received_per_s=(snap.bytes_received - previous.bytes_received) / interval_s,
                bytes_sent_per_s=(snap.bytes_sent - previous.bytes_sent) / interval_s,
                retransmits_per_s=(snap.tcp.retransmits - previous.tcp.retransmits) / interval_s,
                **_datagram_rates(snap, previous, interval_s),
            )
        self._points.append(_Point(snap.taken_at, snap.active, self.rates))
        return self.rates

    def document(self) -> dict[str, Any]:
        """The points as columns, oldest first: the body of ``GET /api/history``."""
        points = self._points
        return {
            "capacity": self.capacity,
            "taken_at": [p.taken_at for p in points],
            "active": [p.active for p in points],
            **{name: [p.rates.published(name) for p in points] for name in _CHARTED},
        }


def _datagram_rates(
    snap: StatsSnapshot, previous: StatsSnapshot, interval_s: float
) -> dict[str, float]:
    """Datagrams per second over every UDP listener, as `Rates` fields."""

    def totals(s: StatsSnapshot) -> tuple[int, int, int]:
        udp = s.udp_listeners
        return (
            sum(u.datagrams_received for u in udp),
            sum(u.datagrams_sent for u in udp),
            sum(u.dropped_total for u in udp),
        )

    now, before = totals(snap), totals(previous)
    received, sent, dropped = ((a - b) / interval_s for a, b in zip(now, before, strict=True))
    return {
        "datagrams_received_per_s": received,
        "datagrams_sent_per_s": sent,
        "datagrams_dropped_per_s": dropped,
    }
