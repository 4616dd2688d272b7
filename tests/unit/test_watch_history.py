"""A watched address's history: the last hour of 10-second bins, whatever the interval."""

from __future__ import annotations

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
