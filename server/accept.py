"""An accept loop that backs off when the process runs out of descriptors instead of spinning.

Tornado's own accept handler re-raises EMFILE; the listening socket stays readable, so the
loop spins at full CPU logging a traceback per wakeup. Here the listener is unwatched for a
short, growing pause and watched again afterwards; queued clients wait in the backlog.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from echostat.server.borrowed import AcceptedSocket, accept_call
from echostat.server.tcp_info import LISTEN_QUEUE_BYTES, TCP_INFO, accept_queue
from echostat.server.wording import count_of

log = logging.getLogger(__name__)

ACCEPTS_PER_WAKEUP = 128
"""Accept at most this many connections per readiness event, so a flood can't starve echoes."""

BACKOFF_S = (0.05, 1.0)
"""First and longest pause after an accept failed for lack of descriptors or memory."""

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def watch_accepts(
    sock: socket.socket, on_accept: Callable[[socket.socket, Any], None], name: str
) -> Callable[[], None]:
    """Call `on_accept(connection, address)` for each client of `sock`; return an unwatch.

    Call it with the event loop running. `name` identifies the listener in the
    (rate-limited) warning logged while backing off.
    """
    loop = asyncio.get_running_loop()
    # sock.accept() is the system call plus a socket built from the listener's family and
    # type, read as enums on every call: read them once here, and build the lighter
    # AcceptedSocket.
    accept = accept_call(sock)
    family, kind, proto = sock.family.value, sock.type.value, sock.proto
    waiting = _accept_queue_reader(sock)
    backoff_s = BACKOFF_S[0]
    retry: asyncio.TimerHandle | None = None
    warnings = RateLimitedLog(log, interval_s=10.0)

    def on_readable() -> None:
        nonlocal backoff_s, retry
        for _ in range(waiting()):
            try:
                fd, address = accept()
            except BlockingIOError:
                break  # another process sharing the socket took them
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                warnings.warning(
                    "%s: cannot accept (%s); pausing accepts, clients wait in the backlog",
                    name,
                    exc.strerror,
                )
                loop.remove_reader(sock)
                retry = loop.call_later(backoff_s, resume)
                backoff_s = min(backoff_s * 2, BACKOFF_S[1])
                return
            on_accept(AcceptedSocket(family, kind, proto, fileno=fd), address)
        backoff_s = BACKOFF_S[0]

    def resume() -> None:
        nonlocal retry
        retry = None
        loop.add_reader(sock, on_readable)

    def unwatch() -> None:
        if retry is not None:
            retry.cancel()
        else:
            loop.remove_reader(sock)

    loop.add_reader(sock, on_readable)
    return unwatch


def _accept_queue_reader(sock: socket.socket) -> Callable[[], int]:
    """A call that says how many accepts to make now on the listening `sock`.

    Where the kernel tells its accept queue's length (TCP_INFO on Linux), exactly that many
    (at most `ACCEPTS_PER_WAKEUP`): a last accept that finds the queue empty costs an
    exception, more than the rest of accepting a connection. Elsewhere, until one fails.
    """
    if TCP_INFO is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return lambda: ACCEPTS_PER_WAKEUP
    option = (socket.IPPROTO_TCP, TCP_INFO, LISTEN_QUEUE_BYTES)

    def waiting() -> int:
        queued = accept_queue(sock.getsockopt(*option))
        return ACCEPTS_PER_WAKEUP if queued is None else min(queued, ACCEPTS_PER_WAKEUP)

    return waiting


class RateLimitedLog:
    """Logs a warning at most once per `interval_s`, then says how many were suppressed."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._next_at = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        suppressed = self._due()
        if suppressed is None:
            return
        if suppressed:
            message += " (%s suppressed)"
            args += (count_of(suppressed, "similar message"),)
        self._logger.warning(message, *args)

    def admit(self, record: logging.LogRecord) -> bool:
        """Whether `record`, which another module (a library) logs, may pass now, as a
        `logging.Filter` decides; one that passes says how many were held back before it."""
        suppressed = self._due()
        if suppressed is None:
            return False
        if suppressed:
            record.msg = "%s (%s suppressed)"
            record.args = (record.getMessage(), count_of(suppressed, "similar message"))
        return True

    def _due(self) -> int | None:
        """None within the interval (one more suppressed); else how many were suppressed
        since the last line, and a new interval starts."""
        now = time.monotonic()
        if now < self._next_at:
            self._suppressed += 1
            return None
        suppressed, self._suppressed = self._suppressed, 0
        self._next_at = now + self._interval_s
        return suppressed
