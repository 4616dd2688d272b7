"""How late the running event loop is while a watch round runs: a timer's lateness.

A round's times include every stall of the loop it runs on (a slow callback, a starved CPU);
a ticking timer that fires late by that much shows the stall, so the round can say so instead
of reporting it as path latency. The timer ticks only while a window is open.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TICK_S = 0.005
"""How often the timer ticks while a round runs; a stall shorter than this may go unseen."""


@dataclass(eq=False)
class LagWindow:
    """One round's view: the worst lateness seen since it opened."""

    worst_s: float = 0.0


class LoopLag:
    """Open a window when a round starts and close it when the round ends; `close` returns
    the worst lateness of the loop in between, in seconds."""

    def __init__(self) -> None:
        self._windows: set[LagWindow] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0

    def open(self) -> LagWindow:
        window = LagWindow()
        self._windows.add(window)
        if self._timer is None:
            self._schedule()
        return window

    def close(self, window: LagWindow) -> float:
        """Stop watching for `window`; its worst lateness, counting a tick overdue right now
        (a stall that ended just before the round's last callback ran)."""
        self._windows.discard(window)
        if self._timer is not None:
            overdue = asyncio.get_running_loop().time() - self._due
            window.worst_s = max(window.worst_s, overdue)
            if not self._windows:
                self._timer.cancel()
                self._timer = None
        return window.worst_s

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + TICK_S
        self._timer = loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        late = asyncio.get_running_loop().time() - self._due
        for window in self._windows:
            window.worst_s = max(window.worst_s, late)
        self._timer = None
        if self._windows:
            self._schedule()
