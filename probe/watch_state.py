"""What the watcher knows of each watched address: the last round, counters, histograms, the
loss of the last five minutes and an hour of history for the page's chart.

Everything here is updated once per round by `probe.watch` and read by the status side when
someone asks; nothing is computed per round trip beyond a histogram's bucket increment.
"""

from __future__ import annotations

import bisect
import statistics
from collections import deque
from dataclasses import dataclass, field

from echostat.probe.figures import milliseconds, percentile
from echostat.probe.watch_round import Exchange, Protocol

BUCKETS_S = tuple(round(m * 10.0**e, 6) for e in range(-4, 1) for m in (1, 2.5, 5))
"""Upper bounds of the RTT and connect histograms: 1, 2.5 and 5 times each power of ten from
100 µs (loopback) to 5 s (a bad path)."""

LOSS_WINDOW_S = 300.0
HISTORY_BIN_S = 10.0
"""The page's chart has one point per this many seconds (one round at the default interval)."""
HISTORY_BINS = 360
"""One hour of bins."""
MAX_BIN_SAMPLES = 1000
"""Round-trip times kept for one bin's median; more in one bin are left out of it."""


@dataclass(frozen=True)
class RttFigures:
    """Round-trip times of one round, in milliseconds (nearest-rank percentiles)."""

    min: float
    p50: float
    p90: float
    max: float


@dataclass(frozen=True)
class WatchRound:
    """One round against one address, as `/api/watch` gives it."""

    at: float
    """When it started, in seconds since the epoch."""
    sent: int
    verified: int
    lost: int
    failed: int
    connect_ms: float | None
    """None for UDP, when the connection could not be opened, or when the round was late."""
    rtt_ms: RttFigures | None
    """None when nothing came back, or when the round was late."""
    late: bool
    """The event loop was late by more than the watcher's threshold during the round: its
    times include the process's own stall, so they are kept out of every latency figure."""
    loop_lag_ms: float
    error: str | None
    duplicated: int
    """Replies that came twice (UDP): the path repeats datagrams; not counted in `sent`."""
    reordered: int
    """Replies that overtook an earlier one (UDP)."""


@dataclass(frozen=True)
class HistoryPoint:
    """One bin of the chart: the median and spread of its round trips, and what was lost."""

    at: float
    """The bin's start, in seconds since the epoch."""
    median_ms: float | None
    min_ms: float | None
    max_ms: float | None
    sent: int
    lost: int
    failed: int
    late_rounds: int


@dataclass
class Histogram:
    """Cumulative-free bucket counts (the last bucket is +Inf) and the sum of what was observed."""

    bounds_s: tuple[float, ...] = BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(self.bounds_s, value_s)] += 1
        self.sum_s += value_s


@dataclass
class _OpenBin:
    at: float
    samples_ms: list[float] = field(default_factory=list)
    sent: int = 0
    lost: int = 0
    failed: int = 0
    late_rounds: int = 0

    def point(self) -> HistoryPoint:
        samples = sorted(self.samples_ms)
        return HistoryPoint(
            at=self.at,
            median_ms=round(statistics.median(samples), 3) if samples else None,
            min_ms=round(samples[0], 3) if samples else None,
            max_ms=round(samples[-1], 3) if samples else None,
            sent=self.sent,
            lost=self.lost,
            failed=self.failed,
            late_rounds=self.late_rounds,
        )


class TargetState:
    """One watched address of one configured target (a name that resolves to three addresses
    has three); `record` adds a round."""

    def __init__(self, name: str, target: str, address: str | None, protocol: Protocol) -> None:
        self.name = name
        self.target = target
        self.address = address
        """The IP address probed; None when the name did not resolve."""
        self.protocol = protocol
        self.up = False
        self.last_round: WatchRound | None = None
        self.rtt = Histogram()
        self.connect = Histogram()
        self.verified_total = 0
        self.lost_total = 0
        self.failed_total = 0
        self.late_rounds_total = 0
        self._recent: deque[tuple[float, int, int]] = deque()
        """(at, sent, lost) of the rounds of the last `LOSS_WINDOW_S`."""
        self._bins: deque[HistoryPoint] = deque(maxlen=HISTORY_BINS)
        self._open: _OpenBin | None = None

    def record(self, at: float, found: Exchange, loop_lag_s: float, late: bool) -> None:
        """Add the round that started at `at` (epoch seconds); a `late` round counts its
        outcomes but none of its times."""
        rtts_ms = sorted(rtt_ns / 1e6 for rtt_ns in found.rtts_ns)
        timed = bool(rtts_ms) and not late
        self.last_round = WatchRound(
            at=round(at, 3),
            sent=found.sent,
            verified=found.verified,
            lost=found.lost,
            failed=found.failed,
            connect_ms=(
                milliseconds(found.connect_ns)
                if found.connect_ns is not None and not late
                else None
            ),
            rtt_ms=_figures(rtts_ms) if timed else None,
            late=late,
            loop_lag_ms=milliseconds(loop_lag_s * 1e9),
            error=found.error,
            duplicated=found.duplicated,
            reordered=found.reordered,
        )
        self.up = found.verified > 0
        self.verified_total += found.verified
        self.lost_total += found.lost
        self.failed_total += found.failed
        if late:
            self.late_rounds_total += 1
        else:
            for rtt_ms in rtts_ms:
                self.rtt.observe(rtt_ms / 1e3)
            if found.connect_ns is not None:
                self.connect.observe(found.connect_ns / 1e9)
        self._recent.append((at, found.sent, found.lost))
        # A round from before the wall clock stepped back is in the future now: it goes too,
        # or the window would hold every round until the clock caught up with it.
        while self._recent and not at - LOSS_WINDOW_S <= self._recent[0][0] <= at:
            self._recent.popleft()
        self._add_to_history(at, found, rtts_ms if timed else [], late)

    @property
    def loss_ratio_5m(self) -> float | None:
        """Lost round trips over those sent in the last five minutes; None if none were sent."""
        sent = sum(item[1] for item in self._recent)
        if not sent:
            return None
        return round(sum(item[2] for item in self._recent) / sent, 4)

    def history(self) -> list[HistoryPoint]:
        """The last hour's bins, oldest first, the one still filling last."""
        points = list(self._bins)
        if self._open is not None:
            points.append(self._open.point())
        return points

    def _add_to_history(self, at: float, found: Exchange, rtts_ms: list[float], late: bool) -> None:
        start = at - at % HISTORY_BIN_S
        if self._open is None or self._open.at != start:
            if self._open is not None:
                self._bins.append(self._open.point())
            self._open = _OpenBin(start)
            while self._bins and self._bins[-1].at >= start:
                self._bins.pop()  # from before the wall clock stepped back: oldest first
            while self._bins and self._bins[0].at <= start - HISTORY_BINS * HISTORY_BIN_S:
                self._bins.popleft()  # kept per round, not per 10 s: at long intervals, by age
        open_bin = self._open
        open_bin.samples_ms += rtts_ms[: MAX_BIN_SAMPLES - len(open_bin.samples_ms)]
        open_bin.sent += found.sent
        open_bin.lost += found.lost
        open_bin.failed += found.failed
        open_bin.late_rounds += late


def _figures(sorted_ms: list[float]) -> RttFigures:
    return RttFigures(
        min=round(sorted_ms[0], 3),
        p50=round(percentile(sorted_ms, 0.5), 3),
        p90=round(percentile(sorted_ms, 0.9), 3),
        max=round(sorted_ms[-1], 3),
    )
