"""Summary figures of measured times, the same for `echostat probe` and the benchmark.

Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the
value at rank ceil(p/100 * n) (1-based), always one of the measured values, never an
interpolation. mdev is the population standard deviation, as ping's mdev.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` 0..1) of an already sorted sequence; 0 if empty."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(1, rank)) - 1]


@dataclass(frozen=True)
class Timing:
    """min/avg/max/mdev and p50/p90/p99 of a set of durations, in milliseconds."""

    count: int
    min_ms: float
    avg_ms: float
    max_ms: float
    mdev_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @classmethod
    def of(cls, durations_ns: Sequence[int]) -> Timing:
        """The figures of `durations_ns` (any order); all zero when there are none."""
        values = sorted(duration / 1e6 for duration in durations_ns)
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            count=len(values),
            min_ms=values[0],
            avg_ms=statistics.fmean(values),
            max_ms=values[-1],
            mdev_ms=statistics.pstdev(values),
            p50_ms=percentile(values, 0.50),
            p90_ms=percentile(values, 0.90),
            p99_ms=percentile(values, 0.99),
        )

    def rounded(self) -> Timing:
        """These figures rounded to microseconds, as reports give them; `count` as it is."""
        names = [field.name for field in dataclasses.fields(self) if field.name != "count"]
        return dataclasses.replace(self, **{name: round(getattr(self, name), 3) for name in names})


def milliseconds(duration_ns: float) -> float:
    """`duration_ns` in milliseconds rounded to microseconds, as reports give them."""
    return round(duration_ns / 1e6, 3)


@dataclass(frozen=True)
class Percentile:
    """One nearest-rank percentile of a set of durations (``--percentiles``)."""

    percentile: float
    ms: float


def percentiles_of(durations_ns: Sequence[int], wanted: Sequence[float]) -> list[Percentile]:
    """The `wanted` percentiles (0 < p <= 100) of `durations_ns` (any order), in ms rounded
    to microseconds; all zero when there are none."""
    values = sorted(durations_ns)
    return [
        Percentile(p, milliseconds(percentile(values, p / 100)) if values else 0.0) for p in wanted
    ]
