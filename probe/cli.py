"""The ``echostat probe`` subcommand, for TCP and ``udp://`` targets alike: parse the flags,
run one check, report it for people or as one JSON document.

The exit status is a contract (`Exit`): 0 when every byte came back exactly, 1 when the path
failed (a byte differed, a connection failed or was reset, a deadline passed, more datagrams
were lost than allowed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import enum
import errno
import functools
import importlib.metadata
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import uvloop

from echostat.probe.console import Console
from echostat.probe.flags import endpoint_for, options_from
from echostat.probe.options import (
    DEFAULT_CONNECTIONS,
    DEFAULT_COUNT,
    DEFAULT_DURATION_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_LOSS_PERCENT,
    DEFAULT_SIZE,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WINDOW,
    MAX_DURATION_S,
    MAX_SEED,
    Mode,
    Options,
    ProxyVersion,
    UDPOptions,
)
from echostat.probe.path_flags import PathOptions, add_path_flags, path_options_from
from echostat.probe.path_run import idle_check, tcp_with_path, udp_with_path
from echostat.probe.pattern import SPAN
from echostat.probe.report import document
from echostat.probe.results import Result, RunFacts, UDPResult
from echostat.probe.runs import CHECK_RUNS


class Exit(enum.IntEnum):
    """The exit status of ``echostat probe`` (argparse exits with `USAGE` itself)."""

    OK = 0
    """Every byte came back exactly (for UDP: no corrupted reply, loss within --max-loss)."""
    PATH_FAILED = 1
    USAGE = 2


_CANNOT_WRITE = "cannot write to stdout"

Probe = Callable[[Console, asyncio.Event], Awaitable[Result | UDPResult]]
"""A check, its options bound: runs until done or the event is set, prints to the console."""


DESCRIPTION = """\
Check any TCP echo server (RFC 862; echostat or not), verifying every byte.

By default: one connection, --count round trips of --size bytes at --interval, one line per
round trip and a summary like ping's (loss and total time included). A round trip with no
echo within --timeout counts as lost and the next one goes on, as ping's; a reset, an early
EOF or a wrong byte ends the connection. --half-close, --connect-only and a load run
(--connections N --duration S, --rate N/s for a fixed rate) are the other checks. Payloads
differ per run (--seed), per connection and per round trip, so a server that mixes up
connections or replays old data is caught.

With a udp://HOST:PORT target it checks a UDP echo instead: --count datagrams of --size
bytes at --interval (or --rate), each numbered and timestamped; it reports loss,
duplicates, reordering, RTT and jitter (RFC 3550), and --max-loss sets the exit status.
"""

EPILOG = """\
Times come from a monotonic clock. Percentiles are nearest-rank: the p-th percentile of n
round trips is the one at rank ceil(p/100 * n), as in bench/; mdev is the standard
deviation, as ping's. A failed connection is not retried (after a lost or altered byte its
stream cannot be trusted); the others of a load run go on.

--json: one document with the same keys however the run ends (null where nothing is known),
ending in error, seed, started_at and version. "failed" counts round trips (or connects)
that did not come back verified; "failures" counts connections that failed, the first in
"first_failure".

exit status: 0 every byte came back exactly; 1 the path failed (a byte differed, a
connection failed or was reset, or --timeout passed) or stdout was closed early;
2 usage error.

examples:
  echostat probe 127.0.0.1:7007
  echostat probe [::1]:7007 -c 0 -i 0.2 -q
  echostat probe 127.0.0.1:7007 --half-close --size 100000
  echostat probe 127.0.0.1:7007 --connections 50 --duration 10 --mode stream
  echostat probe 127.0.0.1:7007 --connections 10 --duration 30 --rate 1000/s \\
      --percentiles 50,90,99,99.9 --json
  echostat probe echo.example.net:7443 --tls --ca ca.pem --json
  echostat probe 127.0.0.1:7008 --proxy-header v2 --proxy-source 203.0.113.7:40000
  echostat probe udp://127.0.0.1:7007 --count 1000 --rate 200/s --max-loss 1
"""


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    """Add ``probe`` to the ``echostat`` command's subcommands (an argparse subparsers action)."""
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "probe",
        help="check an echo server, verifying every byte (see echostat probe --help)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target", metavar="TARGET", help="HOST:PORT, or [IPv6]:PORT; udp://HOST:PORT for UDP"
    )
    checks = parser.add_argument_group("checks (default: ping-like round trips)")
    only = checks.add_mutually_exclusive_group()
    only.add_argument(
        "--half-close",
        action="store_true",
        help="send --size bytes, shut down the write side, expect exactly those bytes and then "
        "EOF; reports how long the EOF took",
    )
    only.add_argument(
        "--connect-only",
        action="store_true",
        help="time the TCP handshake only (and TLS with --tls), --count times, like tcping",
    )
    # The number flags default to None (options_from fills in the DEFAULT_*), so that one
    # given where it means nothing can be refused.
    round_trips = parser.add_argument_group("round trips")
    round_trips.add_argument(
        "--count",
        "-c",
        type=int,
        metavar="N",
        help=f"round trips (or connects) to make (default {DEFAULT_COUNT}; 0: until Ctrl-C)",
    )
    round_trips.add_argument(
        "--interval",
        "-i",
        type=float,
        metavar="S",
        help=f"seconds between their starts (default {DEFAULT_INTERVAL_S:g})",
    )
    round_trips.add_argument(
        "--size",
        "-s",
        type=int,
        metavar="BYTES",
        help=f"bytes per round trip or half-close (default {DEFAULT_SIZE}; 1..{SPAN})",
    )
    load = parser.add_argument_group("load (any of these makes it a load run)")
    load.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help=f"connections at once (default {DEFAULT_CONNECTIONS})",
    )
    load.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds to run (default {DEFAULT_DURATION_S:g}; at most {MAX_DURATION_S})",
    )
    load.add_argument(
        "--mode",
        choices=get_args(Mode),
        help="pingpong: round trips back to back (default); stream: a window in flight, MB/s",
    )
    load.add_argument(
        "--window",
        type=int,
        metavar="BYTES",
        help=f"stream: bytes in flight per connection (default {DEFAULT_WINDOW})",
    )
    connection = parser.add_argument_group("connection")
    connection.add_argument(
        "--timeout",
        "-W",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"deadline per connect and per round trip, in seconds (default {DEFAULT_TIMEOUT_S:g})",
    )
    connection.add_argument("--source", metavar="IP", help="bind the client end to this address")
    connection.add_argument("--tls", action="store_true", help="speak TLS to the server")
    connection.add_argument(
        "--ca", metavar="FILE", help="TLS: trust this CA (PEM) instead of the system's"
    )
    connection.add_argument("--insecure", action="store_true", help="TLS: accept any certificate")
    connection.add_argument(
        "--sni", metavar="NAME", help="TLS: server name to send and verify (default: the host)"
    )
    connection.add_argument(
        "--proxy-header",
        choices=get_args(ProxyVersion),
        help="send a PROXY protocol header first (needs --proxy-source)",
    )
    connection.add_argument(
        "--proxy-source",
        metavar="IP:PORT",
        help="the client address the PROXY header announces",
    )
    load.add_argument(
        "--rate",
        metavar="N/s",
        help="pingpong: round trips per second, all connections together (default: back to "
        "back), to measure latency at a known load; udp://: datagrams per second, instead "
        "of --interval (e.g. 100 or 100/s)",
    )
    udp = parser.add_argument_group(
        "udp (TARGET udp://HOST:PORT: numbered datagrams; loss, order, RTT and jitter)"
    )
    udp.add_argument(
        "--max-loss",
        type=float,
        metavar="PCT",
        help="exit 1 only if more than PCT %% of the datagrams were lost "
        f"(default {DEFAULT_MAX_LOSS_PERCENT:g}: any loss)",
    )
    add_path_flags(parser)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print one JSON document at the end, nothing else"
    )
    output.add_argument(
        "--percentiles",
        metavar="P,P,...",
        help="the round-trip percentiles to report (default 50,90,99; e.g. 50,90,99,99.9)",
    )
    output.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print the first line and the summary only, not a line per round trip (as ping -q)",
    )
    output.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help=f"seed of the payload pattern (0..{MAX_SEED}; default: drawn for each run, shown "
        "by --json): the same seed sends the same bytes again, to reproduce a run",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the check `args` name and report it; returns the exit status (`Exit`)."""
    try:
        options = options_from(args)
        path = path_options_from(args, isinstance(options, UDPOptions))
        if path.idle_timeout_s is not None and isinstance(options, Options):
            options = dataclasses.replace(options, check="idle_timeout")
        probe = _probe_for(options, path)
    except ValueError as exc:
        print(f"echostat probe: {exc}", file=sys.stderr)
        return Exit.USAGE
    if sys.stdout is None:  # started with stdout closed (`>&-`): nowhere to report to
        print(
            f"echostat probe: {_CANNOT_WRITE}: {os.strerror(errno.EBADF).lower()}", file=sys.stderr
        )
        return Exit.PATH_FAILED
    console = Console(quiet=args.json, brief=args.quiet)
    started_at = datetime.datetime.now(datetime.UTC)
    result = uvloop.run(_interruptible(probe, console))
    problem = result.problem or _failed_on(path, result)
    if args.json:
        facts = RunFacts(
            error=problem,
            seed=options.seed,
            started_at=started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            version=_version(),
        )
        try:
            print(json.dumps(document(options, path, result, facts), indent=2), flush=True)
        except OSError as exc:
            console.close(exc)
    if console.write_error is not None:
        print(f"echostat probe: {_CANNOT_WRITE}: {console.write_error}", file=sys.stderr)
    if console.closed:
        return Exit.PATH_FAILED  # as other tools whose reader went away, without a word
    if problem is not None:
        print(f"echostat probe: {problem}", file=sys.stderr)
        return Exit.PATH_FAILED
    return Exit.OK


def _failed_on(path: PathOptions, result: Result | UDPResult) -> str | None:
    """Why the findings of --path fail the run (--fail-on names one of them), or None."""
    if result.path is None or not (found := set(path.fail_on) & set(result.path.findings)):
        return None
    named = ", ".join(finding for finding in result.path.findings if finding in found)
    return f"--fail-on: the path shows {named}"


def _version() -> str | None:
    """The installed echostat's version; None when run from a tree that is not installed."""
    try:
        return importlib.metadata.version("echostat")
    except importlib.metadata.PackageNotFoundError:
        return None


def _probe_for(options: Options | UDPOptions, path: PathOptions) -> Probe:
    """The check `options` ask for, with the path flags' part; ValueError if its endpoint
    can't be set up (TLS, PROXY)."""
    if isinstance(options, UDPOptions):
        return functools.partial(udp_with_path, options, path)
    if path.path and options.tls:
        raise ValueError("--path reads the server's report in the clear: not with --tls")
    endpoint = dataclasses.replace(endpoint_for(options), marks=path.marks)
    if options.check == "idle_timeout":
        return functools.partial(idle_check, options, endpoint, path)
    check = functools.partial(CHECK_RUNS[options.check], options)
    if path.path:
        return functools.partial(tcp_with_path, check, endpoint, options.timeout_s)
    return functools.partial(check, endpoint)


async def _interruptible(probe: Probe, console: Console) -> Result | UDPResult:
    """The check, with Ctrl-C turned into "stop and report" instead of a traceback."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    console.on_closed = interrupted.set
    try:
        return await probe(console, interrupted)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
