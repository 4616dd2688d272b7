"""Where a probe's lines go: ping-like lines on stdout, a live line on a terminal only."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO

from echostat.probe.figures import Timing


class Console:
    """Prints the lines of a run for people; `quiet` (``--json``) prints none of them.

    The progress line is rewritten in place once a second, and only when the output is a
    terminal, so that a log or a pipe gets the final lines alone.

    When the reader goes away (``echostat probe ... | head -1``), `on_closed` is called once
    (to stop the run) and nothing more is written.
    """

    def __init__(self, quiet: bool, stream: TextIO = sys.stdout) -> None:
        self.quiet = quiet
        self.stream = stream
        self.live = not quiet and stream.isatty()
        self.closed = False
        """The reader closed its end: the run is stopped and reported by exit status only."""
        self.on_closed: Callable[[], None] | None = None
        self._progress_shown = False

    def line(self, text: str) -> None:
        if self.quiet or self.closed:
            return
        self.clear_progress()
        try:
            print(text, file=self.stream, flush=True)
        except BrokenPipeError:
            self.close()

    def close(self) -> None:
        """The reader is gone: write nothing more, and stop the run."""
        self.closed = True
        mute(self.stream)
        if self.on_closed is not None:
            self.on_closed()

    def progress(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self._progress_shown = True

    def clear_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False


def count_of(count: int, noun: str) -> str:
    """`count` of `noun` for a run's first line ("1 round trip", "5 round trips"); a count of
    0 runs until Ctrl-C ("round trips until Ctrl-C")."""
    if not count:
        return f"{noun}s until Ctrl-C"
    return f"{count} {noun}{'s' * (count != 1)}"


def timing_lines(what: str, figures: Timing) -> list[str]:
    """ping's two summary lines of a set of times: min/avg/max/mdev, then percentiles."""
    return [
        f"{what} min/avg/max/mdev = {figures.min_ms:.3f}/{figures.avg_ms:.3f}/"
        f"{figures.max_ms:.3f}/{figures.mdev_ms:.3f} ms",
        f"{what} p50/p90/p99 = {figures.p50_ms:.3f}/{figures.p90_ms:.3f}/{figures.p99_ms:.3f} ms",
    ]


def mute(stream: TextIO) -> None:
    """Point `stream`'s descriptor at /dev/null, so that what is still buffered in it (and
    Python's flush at exit) goes nowhere instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
