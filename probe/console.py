"""Where a probe's lines go: ping-like lines on stdout, a live line on a terminal only."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from echostat.probe.figures import Percentile, Timing


class Console:
    """Prints the lines of a run for people; `quiet` (``--json``) prints none of them, `brief`
    (``-q``) only the first line and the summary, as ping's.

    The progress line is rewritten in place once a second, and only when the output is a
    terminal, so that a log or a pipe gets the final lines alone.

    When the reader goes away (``echostat probe ... | head -1``), `on_closed` is called once
    (to stop the run) and nothing more is written.
    """

    def __init__(self, quiet: bool, stream: TextIO | None = None, brief: bool = False) -> None:
        self.quiet = quiet
        self.brief = brief
        self.stream = stream or sys.stdout
        self.live = not quiet and self.stream.isatty()
        self.closed = False
        """The reader closed its end: the run is stopped and reported by exit status only."""
        self.write_error: str | None = None
        """Why stdout could not be written (a full disk), when that, not a reader that went
        away, closed it: said on stderr."""
        self.on_closed: Callable[[], None] | None = None
        self._progress_shown = False

    def line(self, text: str) -> None:
        if self.quiet or self.closed:
            return
        self.clear_progress()
        try:
            print(text, file=self.stream, flush=True)
        except OSError as exc:
            self.close(exc)

    def detail(self, text: str) -> None:
        """A line per round trip, datagram or connect: left out when `brief` (``-q``)."""
        if not self.brief:
            self.line(text)

    def close(self, exc: OSError | None = None) -> None:
        """The reader is gone, or writing failed with `exc`: write nothing more, and stop
        the run."""
        self.closed = True
        if exc is not None and not isinstance(exc, BrokenPipeError):
            self.write_error = os.strerror(exc.errno).lower() if exc.errno else str(exc)
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


def count_of(count: int, noun: str, what: str = "") -> str:
    """`count` of `noun` and `what` for a run's first line ("1 round trip", "5 round trips of
    64 bytes"); a count of 0 runs until Ctrl-C ("round trips of 64 bytes until Ctrl-C")."""
    if not count:
        return f"{noun}s{what} until Ctrl-C"
    return f"{count} {noun}{'s' * (count != 1)}{what}"


def timing_lines(
    what: str, figures: Timing, percentiles: Sequence[Percentile] | None = None
) -> list[str]:
    """ping's two summary lines of a set of times: min/avg/max/mdev, then percentiles
    (`percentiles` if given, else the p50/p90/p99 of `figures`)."""
    if percentiles is None:
        percentiles = [
            Percentile(50, figures.p50_ms),
            Percentile(90, figures.p90_ms),
            Percentile(99, figures.p99_ms),
        ]
    names = "/".join(f"p{p.percentile:g}" for p in percentiles)
    values = "/".join(f"{p.ms:.3f}" for p in percentiles)
    return [
        f"{what} min/avg/max/mdev = {figures.min_ms:.3f}/{figures.avg_ms:.3f}/"
        f"{figures.max_ms:.3f}/{figures.mdev_ms:.3f} ms",
        f"{what} {names} = {values} ms",
    ]


def mute(stream: TextIO) -> None:
    """Point `stream`'s descriptor at /dev/null, so that what is still buffered in it (and
    Python's flush at exit) goes nowhere instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)
