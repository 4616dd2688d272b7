"""Runs the path checks of ``echostat probe``: ``--path`` before the usual check (TCP or
UDP), and ``--idle-timeout`` instead of it; prints for people what they found."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from echostat.probe.console import Console
from echostat.probe.engine import Failure
from echostat.probe.idle import IdleFigures, find_idle_timeout
from echostat.probe.marks import Sent
from echostat.probe.options import Options, UDPOptions
from echostat.probe.path_check import tcp_path, udp_path
from echostat.probe.path_flags import PathOptions
from echostat.probe.path_view import PathView, table
from echostat.probe.results import Result, UDPResult
from echostat.probe.session import Endpoint
from echostat.probe.steps import connect_failure
from echostat.probe.udp import run_udp_probe

TcpCheck = Callable[[Endpoint, Console, asyncio.Event], Awaitable[Result]]


async def tcp_with_path(
    check: TcpCheck,
    endpoint: Endpoint,
    timeout_s: float,
    console: Console,
    interrupted: asyncio.Event,
) -> Result:
    """Compare both views of one connection, then run `check`, reading past the server's
    report on each connection if it sends one."""
    try:
        sent, view = await tcp_path(endpoint, timeout_s)
    except (OSError, TimeoutError, ValueError) as exc:
        return Result(None, [path_failure(endpoint, exc, timeout_s)])
    show(console, endpoint.label, sent, view)
    reporting = dataclasses.replace(endpoint, report_first=view.peer_seen is not None)
    result = await check(reporting, console, interrupted)
    return dataclasses.replace(result, path=view)


async def udp_with_path(
    options: UDPOptions, path: PathOptions, console: Console, interrupted: asyncio.Event
) -> UDPResult:
    """With --path, ask the listener for its view first; then the usual UDP check, whose
    datagrams carry the probe's marks."""
    view = None
    if path.path:
        try:
            sent, view = await udp_path(
                options.host, options.port, path.marks, options.source, options.timeout_s
            )
        except ConnectionRefusedError:
            what = "port unreachable (the answer to the report request): nothing listens there"
            return UDPResult(None, f"{options.target}: {what}", False)
        except OSError as exc:
            return UDPResult(None, f"{options.target}: {exc.strerror or exc}", False)
        show(console, options.target, sent, view)
    result = await run_udp_probe(options, console, interrupted, path.marks)
    return dataclasses.replace(result, path=view)


async def idle_check(
    options: Options,
    endpoint: Endpoint,
    path: PathOptions,
    console: Console,
    interrupted: asyncio.Event,
) -> Result:
    """``--idle-timeout``: search for the path's idle timeout and say what was found."""
    assert path.idle_timeout_s is not None
    try:
        return await _idle_check(options, endpoint, path, path.idle_timeout_s, console, interrupted)
    except (OSError, TimeoutError, ValueError) as exc:
        return Result(None, [path_failure(endpoint, exc, options.timeout_s)])


async def _idle_check(
    options: Options,
    endpoint: Endpoint,
    path: PathOptions,
    max_s: float,
    console: Console,
    interrupted: asyncio.Event,
) -> Result:
    view = None
    if path.path:
        sent, view = await tcp_path(endpoint, options.timeout_s)
        show(console, endpoint.label, sent, view)
        endpoint = dataclasses.replace(endpoint, report_first=view.peer_seen is not None)
    console.line(
        f"IDLE {endpoint.label}: up to {max_s:g} s idle, an echo within "
        f"{options.timeout_s:g} s after each period (Ctrl-C: report what is known)"
    )
    figures = await find_idle_timeout(
        endpoint,
        max_s,
        path.idle_resolution_s,
        options.timeout_s,
        console,
        interrupted,
        options.seed,
    )
    console.line(f"--- {endpoint.label} idle timeout ---")
    console.line(idle_summary(figures, max_s, interrupted.is_set()))
    return Result(None, interrupted=interrupted.is_set(), path=view, idle=figures)


def path_failure(endpoint: Endpoint, exc: BaseException, timeout_s: float) -> Failure:
    """The failure of a path check: connecting failed, or the server's answer was wrong."""
    if isinstance(exc, ValueError):
        return Failure(0, "mismatch", f"{endpoint.label}: {exc}")
    return connect_failure(endpoint, exc, timeout_s)


def idle_summary(figures: IdleFigures, max_s: float, interrupted: bool = False) -> str:
    """One line for people: what survived, what failed and how; a search Ctrl-C stopped
    before anything failed never waited the longest periods, so it claims nothing of them."""
    survived = "nothing" if figures.survived_s is None else f"{figures.survived_s:g} s"
    if figures.failed_s is None and interrupted:
        return f"longest idle survived {survived}: none failed before the search was stopped"
    if figures.failed_s is None:
        return f"longest idle survived {survived}: no timeout up to {max_s:g} s"
    how = {
        "reset": "a reset: something on the path answered for the forgotten connection",
        "silent": "silence: the packets were dropped without an answer (a black hole)",
        "closed": "the far end closed the connection while it was idle",
    }[figures.failure or "silent"]
    return (
        f"longest idle survived {survived}, shortest that failed {figures.failed_s:g} s "
        f"(resolution {figures.resolution_s:g} s), with {how}"
    )


def show(console: Console, label: str, sent: Sent, view: PathView) -> None:
    """The side-by-side table, or one line saying the listener sent no report."""
    if view.peer_seen is None:
        console.line(
            f"PATH {label}: no report (the listener does not have report: true); "
            "the probe's half alone:"
        )
    else:
        console.line(f"PATH {label}: what the probe sent, and what the server saw arrive")
    for line in table(sent, view):
        console.line(f"  {line}")
    findings = ", ".join(view.findings) if view.findings else "none"
    if view.peer_seen is not None:
        console.line(f"  findings: {findings}")
