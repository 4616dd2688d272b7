"""Signals of a long-running process: the first SIGTERM/SIGINT asks for a graceful stop, a
second exits at once with status 1; SIGHUP asks for a reload."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def catch_stop_signals(
    on_second: Callable[[], object] = lambda: None, announce: bool = True
) -> asyncio.Event:
    """Map the first SIGTERM/SIGINT to the returned event; a second one calls `on_second` and
    exits the process immediately. With `announce`, the first one is logged with how to skip
    the drain (a worker, stopped by its supervisor, says nothing). Install this before
    announcing readiness, so that a signal sent right after the startup line is not lost."""
    loop = asyncio.get_running_loop()
    received = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if received.is_set():
            log.warning("%s again: exiting now", name)
            on_second()
            logging.shutdown()
            os._exit(1)
        if announce:  # at once: the drain that follows may last the whole grace period
            log.info(
                "%s: stopping gracefully; a second Ctrl-C (SIGINT or SIGTERM) exits at once", name
            )
        received.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    return received


def catch_reload_signal(reload: Callable[[], object]) -> None:
    """Call `reload` on each SIGHUP, instead of dying on the spot as SIGHUP's default does."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def restore_stop_signals() -> None:
    """Remove the handlers of the stop signals and of SIGHUP (those installed, if any)."""
    loop = asyncio.get_running_loop()
    for signum in (*STOP_SIGNALS, signal.SIGHUP):
        loop.remove_signal_handler(signum)
