"""A watched address's history: the last hour of 10-second bins, whatever the interval."""

from __future__ import annotations

import pytest

from echostat.probe.watch_round import Exchange
from echostat.probe.watch_state import TargetState

ROUND = Exchange(5, 5, 0, 0, 300_000, (100_000,) * 5, None)


def test_history_at_a_minute_interval_holds_only_the_last_hour() -> None:
    """Rounds a minute apart for two hours: the history keeps the bins of the last hour only,
    as /api/watch promises, not 360 bins reaching six hours back."""
    state = TargetState("slow", "127.0.0.1:7", "127.0.0.1", "tcp")
    start = 1_800_000_000.0
    for minute in range(120):
        state.record(start + 60 * minute, ROUND, 0.0, False)
    points = state.history()
    newest = points[-1].at
    assert newest == start + 60 * 119
    assert all(point.at > newest - 3600 for point in points)
    assert len(points) == 60


@pytest.mark.parametrize("step_s", [3600, 400])
def test_a_clock_stepped_back_starts_the_window_and_history_afresh(step_s: int) -> None:
    """The wall clock stepped back (NTP) under rounds every second: the five-minute window
    and the history keep only the rounds since, oldest first, instead of holding every round
    until the clock catches up with the ones from before the step."""
    state = TargetState("t", "127.0.0.1:7", "127.0.0.1", "tcp")
    lossy = Exchange(5, 4, 1, 0, 300_000, (100_000,) * 4, None)
    start = 1_800_000_000.0
    for second in range(60):
        state.record(start + second, lossy, 0.0, False)
    stepped = start - step_s
    for second in range(300):
        state.record(stepped + second, ROUND, 0.0, False)
    assert state.loss_ratio_5m == 0.0
    points = state.history()
    assert [point.at for point in points] == sorted(point.at for point in points)
    assert points[-1].at < start and all(point.lost == 0 for point in points)
