"""The probe's figures and payload checks: nearest-rank percentiles, mdev, first difference."""

from __future__ import annotations

import pytest

from echostat.probe.figures import Timing, percentile
from echostat.probe.pattern import DEFAULT_SEED, SPAN, first_difference, pattern_of

PATTERN = pattern_of(DEFAULT_SEED)


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0.0, 1), (0.5, 5), (0.9, 9), (0.99, 10), (1.0, 10)]
)
def test_percentile_is_the_nearest_rank(fraction: float, expected: float) -> None:
    """The p-th percentile of 1..10 is the value at rank ceil(p * n), never interpolated."""
    assert percentile([float(v) for v in range(1, 11)], fraction) == expected


def test_percentile_of_nothing_is_zero() -> None:
    assert percentile([], 0.99) == 0.0


def test_timing_gives_ping_figures_in_milliseconds() -> None:
    """min/avg/max/mdev (population standard deviation, as ping) from nanoseconds."""
    timing = Timing.of([3_000_000, 1_000_000, 2_000_000])
    assert (timing.count, timing.min_ms, timing.avg_ms, timing.max_ms) == (3, 1.0, 2.0, 3.0)
    assert timing.mdev_ms == pytest.approx((2 / 3) ** 0.5)
    assert (timing.p50_ms, timing.p90_ms, timing.p99_ms) == (2.0, 3.0, 3.0)


def test_timing_of_nothing_is_all_zero() -> None:
    assert Timing.of([]) == Timing(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_first_difference_finds_the_altered_byte() -> None:
    offset = SPAN - 10  # across the wrap: the pattern repeats after SPAN bytes
    data = bytearray(PATTERN[offset : offset + 100])
    assert first_difference(bytes(data), offset, PATTERN) == -1
    data[42] ^= 0x80
    assert first_difference(bytes(data), offset, PATTERN) == 42
