"""The checks of `echostat probe`: round trips (ping-like, `probe.ping`), load
(`probe.load`), half-close and connect-only (here), by the name `Options.check` gives them.

Each drives the verifying clients of `probe.engine` through a `probe.session.Session`,
prints its lines for people through a `Console` and returns a `probe.results.Result`: the
figures of the JSON report and the failures, if any. A failed connection is not retried: after a
lost or altered byte its stream can no longer be trusted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools

from echostat.probe.console import Console, count_of, timing_lines
from echostat.probe.engine import Client, Failure, HalfClose, Run
from echostat.probe.figures import Timing, milliseconds
from echostat.probe.load import load
from echostat.probe.options import Check, Options
from echostat.probe.ping import round_trips
from echostat.probe.results import ConnectFigures, HalfCloseFigures, Result
from echostat.probe.session import Endpoint, open_client, resolve
from echostat.probe.steps import (
    CheckRun,
    connect,
    connect_failure,
    connected_line,
    first_of,
    session_for,
)


async def half_close(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """Send `size` bytes, shut down the write side, expect those bytes and then EOF."""
    session = session_for(endpoint, options.timeout_s, options.seed)
    run = session.run
    console.line(f"PROBE {endpoint.label}: half-close after {options.size} bytes")

    def factory(index: int) -> HalfClose:
        return HalfClose(run, index, options.size, endpoint.preamble)

    if failed := await connect(session, 1, factory, options.timeout_s):
        return failed
    (client,) = session.clients
    assert isinstance(client, HalfClose)
    console.line(connected_line(endpoint, client, None))
    session.start()
    await first_of(client.idle, interrupted.wait())
    session.close()
    transfer_ms = None if client.transfer_ns is None else milliseconds(client.transfer_ns)
    figures = HalfCloseFigures(
        connect_ms=milliseconds(client.connect_ns),
        bytes_sent=options.size,
        bytes_verified=client.verified,
        echo_ms=None if client.echo_ns is None else milliseconds(client.echo_ns),
        eof_ms=None if client.eof_ns is None else milliseconds(client.eof_ns),
        transfer_ms=transfer_ms,
        mb_per_s=None
        if client.transfer_ns is None
        else round(client.verified / client.transfer_ns * 1e3, 3),
    )
    if figures.eof_ms is not None:
        console.line(
            f"{client.verified} bytes verified {figures.echo_ms:.3f} ms after the "
            f"half-close, then EOF after {figures.eof_ms:.3f} ms"
        )
        console.line(
            f"{client.verified} bytes sent and back in {transfer_ms:.3f} ms, "
            f"{figures.mb_per_s:.3f} MB/s"
        )
    return Result(figures, run.failures, interrupted.is_set())


async def connect_only(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """Time the TCP handshake (and TLS, with --tls) `count` times at `interval_s`, like tcping;
    a failed attempt is counted and the next one made."""
    run = Run(stop_on_failure=False, seed=options.seed)
    run.running = False  # the connections carry nothing: closing them is no fault
    how_many = count_of(options.count, "connect")
    console.line(f"PROBE {endpoint.label}: {how_many}, every {options.interval_s:g} s")
    try:
        family, address = await resolve(endpoint)
    except OSError as exc:
        return Result(None, [connect_failure(endpoint, exc, options.timeout_s)])
    times_ns: list[int] = []
    failures: list[Failure] = []
    attempt = 0
    while not interrupted.is_set() and (not options.count or attempt < options.count):
        if attempt:
            await first_of(asyncio.sleep(options.interval_s), interrupted.wait())
            if interrupted.is_set():
                break
        attempt += 1
        opening = open_client(endpoint, address, family, functools.partial(Client, run, attempt))
        try:
            client = await asyncio.wait_for(opening, options.timeout_s)
        except (OSError, TimeoutError) as exc:
            failure = connect_failure(endpoint, exc, options.timeout_s)
            failures.append(dataclasses.replace(failure, connection=attempt))
            console.detail(f"seq={attempt} {failure.message}")
            continue
        if client.transport is None:  # reset by the server as soon as it was accepted
            failure = connect_failure(endpoint, ConnectionResetError(errno.ECONNRESET, ""), 0)
            failures.append(dataclasses.replace(failure, connection=attempt))
            console.detail(f"seq={attempt} {failure.message}")
            continue
        client.transport.close()
        times_ns.append(client.connect_ns)
        console.detail(
            f"connected to {endpoint.label}: seq={attempt} time={client.connect_ns / 1e6:.3f} ms"
        )
    figures = ConnectFigures(
        sent=attempt,
        verified=len(times_ns),
        failed=len(failures),
        connect_ms=Timing.of(times_ns).rounded(),
    )
    console.line(f"--- {endpoint.label} connect statistics ---")
    console.line(f"{attempt} attempts, {len(times_ns)} connected, {len(failures)} failed")
    if times_ns:
        for line in timing_lines("connect", figures.connect_ms):
            console.line(line)
    return Result(figures, failures, interrupted.is_set())


CHECK_RUNS: dict[Check, CheckRun] = {
    "round_trips": round_trips,
    "load": load,
    "half_close": half_close,
    "connect_only": connect_only,
}
"""Each check by its name in `Options.check` and in the JSON report."""
