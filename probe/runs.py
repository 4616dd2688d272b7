"""The checks of `echostat probe`: round trips (ping-like), load, half-close, connect-only.

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
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from echostat.probe.console import Console, count_of, timing_lines
from echostat.probe.engine import Client, Failure, HalfClose, PingPong, Run, Stream
from echostat.probe.figures import Timing, milliseconds
from echostat.probe.options import Check, Mode, Options
from echostat.probe.results import (
    ConnectFigures,
    ConnectionCounts,
    HalfCloseFigures,
    PingPongLoadFigures,
    Result,
    RoundTripFigures,
    StreamLoadFigures,
    TLSFigures,
)
from echostat.probe.session import Endpoint, Session, open_client, resolve

STREAM_CHUNK_BYTES = 64 * 1024
"""Largest single write of the stream mode."""

CheckRun = Callable[[Options, Endpoint, Console, asyncio.Event], Awaitable[Result]]


def connect_failure(endpoint: Endpoint, exc: BaseException, timeout_s: float) -> Failure:
    """A `Failure` saying why connecting to `endpoint` failed, and what to do about TLS."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = (
            f"TLS handshake failed: {exc.verify_message} "
            "(pass --ca FILE with the server's CA, or --insecure)"
        )
    elif isinstance(exc, ssl.SSLError):
        why = f"TLS handshake failed: {exc.reason or exc}"
    elif isinstance(exc, TimeoutError):
        why = f"no answer within {timeout_s:g} s"
    elif isinstance(exc, socket.gaierror):
        why = f"cannot resolve {endpoint.host}: {exc.strerror}"
    elif isinstance(exc, OSError) and exc.errno:
        why = os.strerror(exc.errno).lower()
    else:
        why = str(exc) or type(exc).__name__
    return Failure(0, "connect", f"cannot connect to {endpoint.label}: {why}")


def tls_figures(client: Client) -> TLSFigures | None:
    """The negotiated TLS protocol and cipher of `client`'s connection; None without TLS."""
    if client.transport is None:
        return None
    tls = client.transport.get_extra_info("ssl_object")
    if tls is None:
        return None
    return TLSFigures(tls.version(), tls.cipher()[0], milliseconds(client.handshake_ns))


def connected_line(endpoint: Endpoint, client: Client, tls: TLSFigures | None) -> str:
    text = f"connected to {endpoint.label} in {client.connect_ns / 1e6:.3f} ms"
    if tls is not None:
        text += f", {tls.protocol} {tls.cipher} in {tls.handshake_ms:.3f} ms"
    return text


async def _connect(
    session: Session, count: int, factory: Callable[[int], Client], timeout_s: float
) -> Result | None:
    """Open the session's `count` connections; if that fails, close those opened and return
    the `Result` saying why."""
    try:
        await session.connect(count, factory)
    except (OSError, TimeoutError) as exc:
        session.close()
        return Result(None, [connect_failure(session.endpoint, exc, timeout_s)])
    return None


async def first_of(*waits: Awaitable[Any]) -> None:
    """Return as soon as one of `waits` is done; cancel those of them that are coroutines
    (a future passed in belongs to its owner and is left alone)."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for wait, task in zip(waits, tasks, strict=True):
        if task is not wait:
            task.cancel()


def _session(endpoint: Endpoint, timeout_s: float) -> Session:
    """A session whose run measures from the start (there is no warm-up) and goes on past a
    failed connection, so that the report can count them."""
    run = Run(stop_on_failure=False)
    run.measuring = True
    return Session(endpoint, run, timeout_s)


async def round_trips(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """One connection, `count` round trips of `size` bytes at `interval_s`, one line each."""
    session = _session(endpoint, options.timeout_s)
    run = session.run
    how_many = count_of(options.count, "round trip")
    console.line(
        f"PROBE {endpoint.label}: {how_many} of {options.size} bytes, "
        f"every {options.interval_s:g} s"
    )

    def show(client: PingPong, rtt_ns: int) -> None:
        console.line(
            f"{options.size} bytes from {endpoint.label}: seq={client.round_trip} "
            f"time={rtt_ns / 1e6:.3f} ms"
        )

    def factory(index: int) -> PingPong:
        preamble = endpoint.preamble
        return PingPong(run, index, options.size, preamble, options.interval_s, options.count, show)

    if failed := await _connect(session, 1, factory, options.timeout_s):
        return failed
    (client,) = session.clients
    tls = tls_figures(client)
    console.line(connected_line(endpoint, client, tls))
    session.start()
    await first_of(client.idle, interrupted.wait())
    await session.stop()
    session.close()
    assert isinstance(client, PingPong)
    verified = len(run.latencies_ns)
    figures = RoundTripFigures(
        connect_ms=milliseconds(client.connect_ns),
        tls=tls,
        sent=client.round_trip,
        verified=verified,
        failed=client.round_trip - verified,
        bytes_sent=client.round_trip * options.size,
        bytes_verified=client.verified,
        rtt_ms=Timing.of(run.latencies_ns).rounded(),
    )
    console.line(f"--- {endpoint.label} probe statistics ---")
    console.line(
        f"{figures.sent} sent, {verified} verified, {figures.failed} failed, "
        f"connect {figures.connect_ms:.3f} ms"
    )
    if verified:
        for line in timing_lines("rtt", figures.rtt_ms):
            console.line(line)
    return Result(figures, run.failures, interrupted.is_set())


async def load(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """`connections` at once for `duration_s`, pingpong or stream, with a live line and a table."""
    session = _session(endpoint, options.timeout_s)
    run = session.run
    factory: Callable[[int], Client]
    if options.mode == "pingpong":
        unit = f"{options.size}-byte round trips"

        def factory(index: int) -> Client:
            return PingPong(run, index, options.size, endpoint.preamble)
    else:
        unit = f"a {options.window}-byte window each"
        chunk = min(options.window, STREAM_CHUNK_BYTES)

        def factory(index: int) -> Client:
            return Stream(run, index, options.window, chunk, endpoint.preamble)

    console.line(
        f"PROBE {endpoint.label}: {options.mode}, {options.connections} connections, "
        f"{unit}, {options.duration_s:g} s"
    )
    if failed := await _connect(session, options.connections, factory, options.timeout_s):
        return failed
    tls = tls_figures(session.clients[0])
    started = time.perf_counter()
    session.start()
    progress = asyncio.create_task(_show_progress(console, session, options.mode, started))
    all_idle = asyncio.gather(*(client.idle for client in session.clients))
    await first_of(asyncio.sleep(options.duration_s), all_idle, interrupted.wait())
    await session.stop()
    elapsed = time.perf_counter() - started
    progress.cancel()
    session.close()
    figures = _load_figures(options, session, elapsed, tls)
    console.clear_progress()
    for line in _load_table(options, figures):
        console.line(line)
    return Result(figures, run.failures, interrupted.is_set())


def _load_figures(
    options: Options, session: Session, elapsed: float, tls: TLSFigures | None
) -> StreamLoadFigures | PingPongLoadFigures:
    clients = session.clients
    verified = sum(client.verified for client in clients)
    shared: dict[str, Any] = {
        "seconds": round(elapsed, 3),
        "connections": ConnectionCounts(opened=len(clients), failed=len(session.run.failures)),
        "connect_ms": Timing.of([client.connect_ns for client in clients]).rounded(),
        "tls": tls,
        "bytes_verified": verified,
        "mb_per_s": round(verified / elapsed / 1e6, 3),
    }
    if options.mode == "stream":
        sent_bytes = sum(client.sent for client in clients if isinstance(client, Stream))
        return StreamLoadFigures(**shared, bytes_sent=sent_bytes)
    latencies = session.run.latencies_ns
    sent = sum(client.round_trip for client in clients if isinstance(client, PingPong))
    return PingPongLoadFigures(
        **shared,
        sent=sent,
        verified=len(latencies),
        failed=sent - len(latencies),
        bytes_sent=sent * options.size,
        round_trips_per_s=round(len(latencies) / elapsed, 1),
        rtt_ms=Timing.of(latencies).rounded(),
    )


def _load_table(options: Options, figures: StreamLoadFigures | PingPongLoadFigures) -> list[str]:
    """The final table of a load run: one row per figure, units in the first column."""
    connections = figures.connections
    connect = figures.connect_ms
    rows = [
        ("connections", f"{connections.opened} opened, {connections.failed} failed"),
        (
            "connect ms",
            f"min {connect.min_ms:.3f}  avg {connect.avg_ms:.3f}  "
            f"p99 {connect.p99_ms:.3f}  max {connect.max_ms:.3f}",
        ),
    ]
    if isinstance(figures, PingPongLoadFigures):
        rtt = figures.rtt_ms
        rows += [
            ("round trips", f"{figures.sent} sent, {figures.verified} verified"),
            ("round trips/s", f"{figures.round_trips_per_s:.0f}"),
            (
                "rtt ms",
                f"min {rtt.min_ms:.3f}  avg {rtt.avg_ms:.3f}  max {rtt.max_ms:.3f}  "
                f"mdev {rtt.mdev_ms:.3f}",
            ),
            ("rtt ms", f"p50 {rtt.p50_ms:.3f}  p90 {rtt.p90_ms:.3f}  p99 {rtt.p99_ms:.3f}"),
        ]
    rows += [
        ("bytes", f"{figures.bytes_sent} sent, {figures.bytes_verified} verified"),
        ("MB/s", f"{figures.mb_per_s:.3f} verified, in {figures.seconds:.2f} s"),
    ]
    return [f"--- {options.target} load statistics ---"] + [
        f"{name:<14} {value}" for name, value in rows
    ]


async def _show_progress(console: Console, session: Session, mode: Mode, started: float) -> None:
    """Once a second on a terminal: the last second's rate, its p99 and the failures so far."""
    if not console.live:
        return
    run = session.run
    seen_round_trips = 0
    seen_bytes = 0
    while True:
        await asyncio.sleep(1.0)  # the display's cadence, not a synchronisation
        verified = sum(client.verified for client in session.clients)
        if mode == "pingpong":
            latencies = run.latencies_ns[seen_round_trips:]
            seen_round_trips += len(latencies)
            rate = f"{len(latencies)} round trips/s  p99 {Timing.of(latencies).p99_ms:.3f} ms"
        else:
            rate = f"{(verified - seen_bytes) / 1e6:.2f} MB/s"
        seen_bytes = verified
        elapsed = time.perf_counter() - started
        console.progress(f"{elapsed:5.1f} s  {rate}  {len(run.failures)} failed")


async def half_close(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """Send `size` bytes, shut down the write side, expect those bytes and then EOF."""
    session = _session(endpoint, options.timeout_s)
    run = session.run
    console.line(f"PROBE {endpoint.label}: half-close after {options.size} bytes")

    def factory(index: int) -> HalfClose:
        return HalfClose(run, index, options.size, endpoint.preamble)

    if failed := await _connect(session, 1, factory, options.timeout_s):
        return failed
    (client,) = session.clients
    assert isinstance(client, HalfClose)
    console.line(connected_line(endpoint, client, None))
    session.start()
    await first_of(client.idle, interrupted.wait())
    session.close()
    figures = HalfCloseFigures(
        connect_ms=milliseconds(client.connect_ns),
        bytes_sent=options.size,
        bytes_verified=client.verified,
        echo_ms=None if client.echo_ns is None else milliseconds(client.echo_ns),
        eof_ms=None if client.eof_ns is None else milliseconds(client.eof_ns),
    )
    if figures.eof_ms is not None:
        console.line(
            f"{client.verified} bytes verified {figures.echo_ms:.3f} ms after the "
            f"half-close, then EOF after {figures.eof_ms:.3f} ms"
        )
    return Result(figures, run.failures, interrupted.is_set())


async def connect_only(
    options: Options, endpoint: Endpoint, console: Console, interrupted: asyncio.Event
) -> Result:
    """Time the TCP handshake (and TLS, with --tls) `count` times at `interval_s`, like tcping;
    a failed attempt is counted and the next one made."""
    run = Run(stop_on_failure=False)
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
            console.line(f"seq={attempt} {failure.message}")
            continue
        if client.transport is None:  # reset by the server as soon as it was accepted
            failure = connect_failure(endpoint, ConnectionResetError(errno.ECONNRESET, ""), 0)
            failures.append(dataclasses.replace(failure, connection=attempt))
            console.line(f"seq={attempt} {failure.message}")
            continue
        client.transport.close()
        times_ns.append(client.connect_ns)
        console.line(
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
