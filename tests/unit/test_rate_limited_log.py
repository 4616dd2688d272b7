"""The rate-limited warning: one line per interval, then how many were left out, in words."""

from __future__ import annotations

import logging
import time

import pytest

from echostat.server.accept import RateLimitedLog

INTERVAL_S = 0.2


def warn_past_the_interval(warnings: RateLimitedLog, suppressed: int) -> None:
    """Warn once, `suppressed` more times within the interval, then once after it."""
    warnings.warning("refused %s", "first")
    for _ in range(suppressed):
        warnings.warning("refused %s", "again")
    passed_at = time.monotonic() + INTERVAL_S
    while time.monotonic() < passed_at:
        time.sleep(INTERVAL_S / 4)  # the interval itself is what is waited for
    warnings.warning("refused %s", "last")


@pytest.mark.parametrize(
    ("suppressed", "said"),
    [(1, "(1 similar message suppressed)"), (3, "(3 similar messages suppressed)")],
)
def test_suppressed_warnings_are_counted_in_words(
    caplog: pytest.LogCaptureFixture, suppressed: int, said: str
) -> None:
    """The warning after the interval says how many were left out: one message, or messages."""
    caplog.set_level(logging.WARNING)
    warn_past_the_interval(RateLimitedLog(logging.getLogger("test"), INTERVAL_S), suppressed)
    assert [r.getMessage() for r in caplog.records] == ["refused first", f"refused last {said}"]
