"""``echostat probe --idle-timeout MAX_S``: how long a connection may sit idle before something
on the path (a NAT, a firewall's connection table) forgets it, and how it then fails.

A round opens a few connections at once, each verified by one echo, lets each sit idle for a
different period and then expects the next echo within ``--timeout``, which `TCP_USER_TIMEOUT`
also bounds so that unacknowledged data gives up as fast. The first round doubles the period
from one second up to MAX_S; the next ones bisect between the longest idle survived and the
shortest that failed, until the two are within the resolution. A failure is ``reset`` (a device
answered for the forgotten connection), ``silent`` (a black hole) or ``closed`` (the far end
closed it while idle: its own idle timeout).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from echostat.probe.console import Console
from echostat.probe.pattern import pattern_of, start_offset
from echostat.probe.server_report import REPORT_FIRST, starts_like_report
from echostat.probe.session import (
    Endpoint,
    new_socket,
    read_required_report,
    resolve,
    send_preamble,
)

IdleFailure = Literal["reset", "silent", "closed"]

MAX_IDLE_S = 7200
FIRST_PERIOD_S = 1.0
SPLITS = 3
"""Connections per bisecting round: each round narrows the interval to a quarter."""
PAYLOAD_BYTES = 64


@dataclass(frozen=True)
class IdleFigures:
    """The ``idle`` object of ``--json``."""

    survived_s: float | None
    """The longest idle period after which the echo still came back (None: not even the first)."""
    failed_s: float | None
    """The shortest after which it did not (None: every period up to MAX_S survived)."""
    failure: IdleFailure | None
    resolution_s: float


@dataclass
class _Bounds:
    """What the rounds so far found."""

    survived_s: float | None = None
    failed_s: float | None = None
    failure: IdleFailure | None = None

    def add(self, period_s: float, outcome: IdleFailure | None) -> None:
        if outcome is None:
            self.survived_s = max(self.survived_s or 0.0, period_s)
        elif self.failed_s is None or period_s < self.failed_s:
            self.failed_s, self.failure = period_s, outcome


def doubling(max_s: float) -> list[float]:
    """The first round's periods: 1, 2, 4, ... seconds, and MAX_S itself."""
    periods, period = [], FIRST_PERIOD_S
    while period < max_s:
        periods.append(period)
        period *= 2
    return [*periods, float(max_s)]


def default_resolution_s(failed_s: float) -> float:
    """A tenth of the shortest failing period, and at least a second."""
    return max(1.0, round(failed_s / 10, 1))


def between(low_s: float, high_s: float) -> list[float]:
    """A bisecting round's periods: `SPLITS` points evenly inside (low, high), to 0.1 s."""
    step = (high_s - low_s) / (SPLITS + 1)
    return sorted({round(low_s + step * k, 1) for k in range(1, SPLITS + 1)} - {low_s, high_s})


async def find_idle_timeout(
    endpoint: Endpoint,
    max_s: float,
    resolution_s: float | None,
    bound_s: float,
    console: Console,
    interrupted: asyncio.Event,
    seed: int,
) -> IdleFigures:
    """Search for the idle timeout of the path to `endpoint`, up to `max_s`. Raises OSError
    (or TimeoutError) if a connection can't be opened or its first echo doesn't come back;
    the echoes are slices of the pattern of `seed`, as every check of the run sends;
    ValueError if an echo comes back wrong."""
    family, address = await resolve(endpoint)
    pattern = pattern_of(seed)
    bounds = _Bounds()
    periods = doubling(max_s)
    while periods and not interrupted.is_set():
        await _round(
            endpoint, family, address, periods, bound_s, pattern, bounds, console, interrupted
        )
        if bounds.failed_s is None:
            break
        resolution_s = resolution_s or default_resolution_s(bounds.failed_s)
        periods = between(bounds.survived_s or 0.0, bounds.failed_s)
        if bounds.failed_s - (bounds.survived_s or 0.0) <= resolution_s:
            break
    return IdleFigures(
        bounds.survived_s, bounds.failed_s, bounds.failure, resolution_s or FIRST_PERIOD_S
    )


async def _round(
    endpoint: Endpoint,
    family: int,
    address: tuple[object, ...],
    periods: Sequence[float],
    bound_s: float,
    pattern: bytes,
    bounds: _Bounds,
    console: Console,
    interrupted: asyncio.Event,
) -> None:
    """Idle one connection per period, at once; a failure cancels the longer periods (they
    would fail too), Ctrl-C all of them."""
    tasks: dict[asyncio.Future[Any], float] = {
        asyncio.create_task(
            _idle_once(endpoint, family, address, period, bound_s, index, pattern)
        ): period
        for index, period in enumerate(periods)
    }
    listed = ", ".join(f"{period:g}" for period in periods)
    console.line(f"idling {len(periods)} connection{'s' * (len(periods) != 1)} for {listed} s")
    started = time.monotonic()
    stop: asyncio.Future[Any] = asyncio.ensure_future(interrupted.wait())
    try:
        pending: set[asyncio.Future[Any]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(
                pending | {stop}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(stop)
            if stop in done:
                break
            for task in done:
                period = tasks[task]
                outcome = task.result()
                bounds.add(period, outcome)
                console.line(f"idle {period:g} s: {outcome or 'survived'}")
                if outcome is not None:
                    for other in list(pending):
                        if tasks[other] > period:
                            other.cancel()
                            pending.discard(other)
            longest = max((tasks[task] for task in pending), default=0.0)
            left = max(0.0, longest - (time.monotonic() - started))
            console.progress(f"waiting up to {left:.0f} s more for {len(pending)} idle connections")
    finally:
        stop.cancel()
        for task in tasks:
            task.cancel()
        console.clear_progress()


async def _idle_once(
    endpoint: Endpoint,
    family: int,
    address: tuple[object, ...],
    period_s: float,
    bound_s: float,
    index: int,
    pattern: bytes,
) -> IdleFailure | None:
    """Open a connection, verify one echo, sit idle for `period_s`, then verify another within
    `bound_s`: None if it came back, else how the connection failed."""
    loop = asyncio.get_running_loop()
    sock = new_socket(endpoint, family, user_timeout_s=bound_s)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), bound_s)
        await send_preamble(endpoint, sock)
        if endpoint.report_first:
            await read_required_report(endpoint, sock, bound_s)
        offset = start_offset(index)
        if (first := await _echo(loop, sock, pattern, offset, bound_s)) is not None:
            raise OSError(f"{endpoint.label}: the first echo failed ({first}) before any idling")
        try:
            early = await asyncio.wait_for(loop.sock_recv(sock, 1), period_s)
        except TimeoutError:
            pass
        except ConnectionResetError:
            return "reset"
        else:
            if early:
                raise ValueError(f"{endpoint.label} sent bytes nobody asked for while idle")
            return "closed"
        return await _echo(loop, sock, pattern, offset + PAYLOAD_BYTES, bound_s)
    finally:
        sock.close()


async def _echo(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    pattern: bytes,
    offset: int,
    bound_s: float,
) -> IdleFailure | None:
    """Send `PAYLOAD_BYTES` of the run's pattern and verify the echo within `bound_s`."""
    payload = pattern[offset : offset + PAYLOAD_BYTES]
    received = b""
    try:
        await loop.sock_sendall(sock, payload)
        async with asyncio.timeout(bound_s):
            while len(received) < len(payload):
                data = await loop.sock_recv(sock, len(payload) - len(received))
                if not data:
                    return "closed"
                received += data
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "silent"
    except OSError as exc:
        if exc.errno == errno.ETIMEDOUT:  # TCP_USER_TIMEOUT: the data was never acknowledged
            return "silent"
        raise
    if starts_like_report(received):
        raise ValueError(REPORT_FIRST)
    if received != payload:
        raise ValueError("an echo came back altered")
    return None
