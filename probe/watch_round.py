"""One watch round against one address: `count` round trips through the verifying engine.

TCP rounds drive the engine's `PingPong` client through a `Session`, exactly as
`echostat probe HOST:PORT` does, on one new connection per round; UDP rounds are one quiet run
of the UDP probe's exchange. Either way every byte is checked, and the result is an `Exchange`:
what was sent, verified, lost and failed, with each verified round trip's time.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Literal

from echostat.probe.engine import PingPong
from echostat.probe.options import UDPOptions, draw_seed
from echostat.probe.session import Endpoint, open_client
from echostat.probe.steps import connect_failure, first_of, session_for
from echostat.probe.udp import exchange_quietly

Protocol = Literal["tcp", "udp"]

SPACING_S = 0.0
"""Between the starts of a round's round trips: none, one after the other. A round then lasts
a few round-trip times, which keeps short the window in which the loop's lateness is watched
(`probe.loop_lag` ticks only while a round runs)."""


@dataclass(frozen=True)
class Exchange:
    """What one round found: `sent` = `verified` + `lost` + `failed`; `error` says why the
    first round trip that did not verify did not (None when all did)."""

    sent: int
    verified: int
    lost: int
    """Round trips that never came back within the timeout (UDP datagrams, or a TCP echo)."""
    failed: int
    """Round trips that came back wrong, or ended with the connection (a byte differed, EOF,
    reset); a TCP round whose connection cannot be opened sends nothing."""
    connect_ns: int | None
    """The TCP handshake; None for UDP and when the connection could not be opened."""
    rtts_ns: tuple[int, ...]
    error: str | None
    duplicated: int = 0
    """Replies that came a second time (UDP; a TCP stream cannot repeat one)."""
    reordered: int = 0
    """Replies that came after the reply to a later datagram (UDP)."""


async def exchange(
    protocol: Protocol, host: str, port: int, count: int, size: int, timeout_s: float
) -> Exchange:
    """One round of `count` round trips of `size` bytes to `host` (an IP address) `port`."""
    if protocol == "udp":
        return await _udp_round(host, port, count, size, timeout_s)
    return await _tcp_round(host, port, count, size, timeout_s)


async def _tcp_round(host: str, port: int, count: int, size: int, timeout_s: float) -> Exchange:
    endpoint = Endpoint(host, port)
    # A pattern of its own, as each probe run draws: rounds of two watchers whose replies a
    # balancer crossed would otherwise match byte for byte.
    session = session_for(endpoint, timeout_s, draw_seed())
    run = session.run
    # `host` is an address already (the watcher resolved it): connect to it without asking
    # the resolver again, as `Session.connect` would.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    opening = open_client(
        endpoint, (host, port), family, lambda: PingPong(run, 1, size, b"", SPACING_S, count)
    )
    try:
        client = await asyncio.wait_for(opening, timeout_s)
    except (OSError, TimeoutError) as exc:
        return Exchange(0, 0, 0, 0, None, (), connect_failure(endpoint, exc, timeout_s).message)
    session.clients.append(client)
    session.start()
    try:
        # The session's deadline watch fails an echo overdue by `timeout_s`, which ends the
        # round; the bound here is only a backstop.
        await first_of(client.idle, asyncio.sleep(count * (SPACING_S + timeout_s) + timeout_s))
    finally:
        run.running = False  # closing now is the end of the round, no fault
        client.stop()  # a round cancelled between round trips: no next one
        session.close()
    verified = len(run.latencies_ns)
    unverified = client.round_trips_sent - verified
    timed_out = any(failure.reason == "timeout" for failure in run.failures)
    return Exchange(
        sent=client.round_trips_sent,
        verified=verified,
        lost=unverified if timed_out else 0,
        failed=0 if timed_out else unverified,
        connect_ns=client.connect_ns,
        rtts_ns=tuple(run.latencies_ns),
        error=run.failures[0].message if run.failures else None,
    )


async def _udp_round(host: str, port: int, count: int, size: int, timeout_s: float) -> Exchange:
    options = UDPOptions(host, port, count, size, SPACING_S, timeout_s, 0.0, None)
    try:
        counts = await exchange_quietly(options)
    except OSError as exc:
        return Exchange(0, 0, 0, 0, None, (), f"cannot send to {options.target}: {exc}")
    # A reply that matches nothing sent stands for a datagram that came back wrong: failed.
    failed = min(counts.corrupted, counts.lost)
    lost = counts.lost - failed
    error = None
    if failed:
        error = f"{failed} of {counts.sent} replies differed from what was sent"
    elif lost:
        error = f"{lost} of {counts.sent} datagrams did not come back within {timeout_s:g} s"
        if counts.icmp_error is not None:  # the kernel knows why: nothing listens, no route
            error += f"; the kernel reported {counts.icmp_error}"
    return Exchange(
        sent=counts.sent,
        verified=counts.received,
        lost=lost,
        failed=failed,
        connect_ns=None,
        rtts_ns=tuple(counts.rtts_ns),
        error=error,
        duplicated=counts.duplicated,
        reordered=counts.reordered,
    )
