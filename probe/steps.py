"""What the checks of `echostat probe` share: opening their connections, saying why that
failed, the TLS figures and the first line after connecting."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from echostat.probe.console import Console
from echostat.probe.engine import Client, Failure, PingPong, Run, Stream
from echostat.probe.figures import milliseconds
from echostat.probe.options import Options
from echostat.probe.results import Result, TLSFigures
from echostat.probe.session import Endpoint, Session

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


async def connect(
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
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the caller is cancelled: no task of ours is left pending
        for wait, task in zip(waits, tasks, strict=True):
            if task is not wait:
                task.cancel()


def session_for(endpoint: Endpoint, timeout_s: float, seed: int) -> Session:
    """A session whose run measures from the start (there is no warm-up) and goes on past a
    failed connection, so that the report can count them."""
    run = Run(stop_on_failure=False, seed=seed)
    run.measuring = True
    return Session(endpoint, run, timeout_s)


def abandon(session: Session) -> None:
    """Ctrl-C: stop at once, as ping does, without waiting for what is in flight (a round
    trip, a stream's window), which is left out of the counts: it neither came back nor
    timed out. The connections are closed, so none of it can come back or fail them.

    A connection on which nothing at all has come back fails instead, as ping's run with no
    reply does: else a server that never answers would pass whenever the run is interrupted
    before the first timeout."""
    session.run.running = False
    for client in session.clients:
        if not client.failed and not client.verified and client.waiting_since_ns() is not None:
            client.fail("timeout", f"{client.overdue()} before the interrupt")
        elif isinstance(client, PingPong) and client.in_flight:
            client.in_flight = False
            client.round_trip -= 1
            client.verified -= client.received
        elif isinstance(client, Stream):
            client.sent = client.verified
        if client.transport is not None:
            client.transport.close()
