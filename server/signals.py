"""SIGTERM/SIGINT for a long-running process: the first asks for a graceful stop, a second
exits at once with status 1."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def catch_stop_signals(on_second: Callable[[], object] = lambda: None) -> asyncio.Event:
    """Map the first SIGTERM/SIGINT to the returned event; a second one calls `on_second` and
    exits the process immediately. Install this before announcing readiness, so that a
    signal sent right after the startup line is not lost."""
    loop = asyncio.get_running_loop()
    received = asyncio.Event()

    def on_signal(signum: int) -> None:
        if received.is_set():
            log.warning("%s again: exiting now", signal.Signals(signum).name)
            on_second()
            logging.shutdown()
            os._exit(1)
        received.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    return received


def restore_stop_signals() -> None:
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.remove_signal_handler(signum)
