"""Where a probe's lines go: ping-like lines on stdout, a live line on a terminal only."""

from __future__ import annotations

import sys
from typing import TextIO


class Console:
    """Prints the lines of a run for people; `quiet` (``--json``) prints none of them.

    The progress line is rewritten in place once a second, and only when the output is a
    terminal, so that a log or a pipe gets the final lines alone.
    """

    def __init__(self, quiet: bool, stream: TextIO = sys.stdout) -> None:
        self.quiet = quiet
        self.stream = stream
        self.live = not quiet and stream.isatty()
        self._progress_shown = False

    def line(self, text: str) -> None:
        if self.quiet:
            return
        self.clear_progress()
        print(text, file=self.stream, flush=True)

    def progress(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self._progress_shown = True

    def clear_progress(self) -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False
