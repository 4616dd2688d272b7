"""The ``echostat probe`` subcommand: parse and check the flags, run one check, report.

Exit status: 0 when every byte came back exactly, 1 when the path failed (a byte differed,
a connection failed or was reset, a deadline passed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import socket
import sys
from typing import Any

import uvloop

from echostat.probe import udp
from echostat.probe.address import parse_host_port, parse_ip_port
from echostat.probe.console import Console
from echostat.probe.options import Options
from echostat.probe.pattern import SPAN
from echostat.probe.proxy_header import ip_of, proxy_header
from echostat.probe.runs import CHECK_RUNS, Result
from echostat.probe.session import Endpoint
from echostat.probe.tls import client_context

EXIT_OK = 0
EXIT_PATH_FAILED = 1
EXIT_USAGE = 2

MAX_DURATION_S = 600
"""A load run keeps every round-trip time for exact percentiles (about 40 bytes each)."""
MIN_ENDLESS_INTERVAL_S = 0.01
"""With --count 0 the round trips go on until Ctrl-C; this bounds how fast their times pile up."""

DESCRIPTION = """\
Check any TCP echo server (RFC 862; echostat or not), verifying every byte.

By default: one connection, --count round trips of --size bytes at --interval, one line per
round trip and a summary like ping's. --half-close, --connect-only and a load run
(--connections N --duration S) are the other checks. Payloads differ per connection and
per round trip, so a server that mixes up connections or replays old data is caught.

With a udp://HOST:PORT target it checks a UDP echo instead: --count datagrams of --size
bytes at --interval (or --rate), each numbered and timestamped; it reports loss,
duplicates, reordering, RTT and jitter (RFC 3550), and --max-loss sets the exit status.
"""

EPILOG = """\
Times come from a monotonic clock. Percentiles are nearest-rank: the p-th percentile of n
round trips is the one at rank ceil(p/100 * n), as in bench/; mdev is the standard
deviation, as ping's. A failed connection is not retried (after a lost or altered byte its
stream cannot be trusted); the others of a load run go on.

exit status: 0 every byte came back exactly; 1 the path failed (a byte differed, a
connection failed or was reset, or --timeout passed); 2 usage error.

examples:
  echostat probe 127.0.0.1:7007
  echostat probe [::1]:7007 --count 0 --interval 0.2
  echostat probe 127.0.0.1:7007 --half-close --size 100000
  echostat probe 127.0.0.1:7007 --connections 50 --duration 10 --mode stream
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
    round_trips = parser.add_argument_group("round trips")
    round_trips.add_argument(
        "--count",
        type=int,
        metavar="N",
        help="round trips (or connects) to make (default 5; 0: until Ctrl-C)",
    )
    round_trips.add_argument(
        "--interval", type=float, metavar="S", help="seconds between their starts (default 1)"
    )
    round_trips.add_argument(
        "--size",
        type=int,
        metavar="BYTES",
        help=f"bytes per round trip or half-close (default 64; 1..{SPAN})",
    )
    load = parser.add_argument_group("load (any of these makes it a load run)")
    load.add_argument(
        "--connections", type=int, metavar="N", help="connections at once (default 1)"
    )
    load.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"seconds to run (default 10; at most {MAX_DURATION_S})",
    )
    load.add_argument(
        "--mode",
        choices=("pingpong", "stream"),
        help="pingpong: round trips back to back (default); stream: a window in flight, MB/s",
    )
    load.add_argument(
        "--window",
        type=int,
        metavar="BYTES",
        help="stream: bytes in flight per connection (default 262144)",
    )
    connection = parser.add_argument_group("connection")
    connection.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="deadline per connect and per round trip, in seconds (default 5)",
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
        choices=("v1", "v2"),
        help="send a PROXY protocol header first (needs --proxy-source)",
    )
    connection.add_argument(
        "--proxy-source",
        metavar="IP:PORT",
        help="the client address the PROXY header announces",
    )
    udp.add_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print one JSON document at the end, nothing else"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the check `args` name and report it; returns the exit status."""
    if udp.is_udp_target(args.target):
        return udp.run(args)
    try:
        udp.check_tcp_args(args)
        options = options_from(args)
        endpoint = endpoint_for(options)
    except ValueError as exc:
        print(f"echostat probe: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console = Console(quiet=options.json)
    result = uvloop.run(_run(options, endpoint, console))
    if options.json:
        print(json.dumps(document(options, result), indent=2))
    for failure in result.failures[:1]:
        more = len(result.failures) - 1
        also = f" (and {more} more failure{'s' * (more > 1)})" if more else ""
        print(f"echostat probe: {failure.message}{also}", file=sys.stderr)
    return EXIT_PATH_FAILED if result.failures else EXIT_OK


async def _run(options: Options, endpoint: Endpoint, console: Console) -> Result:
    """The check, with Ctrl-C turned into "stop and report" instead of a traceback."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        return await CHECK_RUNS[options.check](options, endpoint, console, interrupted)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def document(options: Options, result: Result) -> dict[str, Any]:
    """The ``--json`` report: target, options, every figure, the first failure."""
    first = result.failures[0] if result.failures else None
    return {
        "target": options.target,
        "check": options.check,
        "ok": not result.failures,
        "interrupted": result.interrupted,
        "options": dataclasses.asdict(options),
        **result.figures,
        "failures": len(result.failures),
        "first_failure": dataclasses.asdict(first) if first else None,
    }


def options_from(args: argparse.Namespace) -> Options:
    """Check the flags together and fill in the defaults; ValueError names what is wrong."""
    host, port = parse_host_port(args.target)
    load_flags = [
        flag
        for flag, value in (
            ("--connections", args.connections),
            ("--duration", args.duration),
            ("--mode", args.mode),
            ("--window", args.window),
        )
        if value is not None
    ]
    check = "round_trips"
    if args.half_close:
        check = "half_close"
    elif args.connect_only:
        check = "connect_only"
    if load_flags:
        if check != "round_trips":
            flag = "--" + check.replace("_", "-")
            raise ValueError(f"{load_flags[0]} starts a load run; it does not go with {flag}")
        check = "load"
    _refuse(check, args)
    options = Options(
        target=args.target,
        host=host,
        port=port,
        check=check,
        count=_pick(args.count, 5),
        interval_s=_pick(args.interval, 1.0),
        size=_pick(args.size, 64),
        connections=_pick(args.connections, 1),
        duration_s=_pick(args.duration, 10.0),
        mode=_pick(args.mode, "pingpong"),
        window=_pick(args.window, 256 * 1024),
        timeout_s=args.timeout,
        source=args.source,
        tls=args.tls,
        ca=args.ca,
        insecure=args.insecure,
        sni=args.sni,
        proxy_header=args.proxy_header,
        proxy_source=args.proxy_source,
        json=args.json,
    )
    _check_ranges(options)
    return options


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _refuse(check: str, args: argparse.Namespace) -> None:
    """Flags that mean nothing for `check` are an error, not silently ignored."""
    meaningless = {
        "load": [("--count", args.count), ("--interval", args.interval)],
        "half_close": [("--count", args.count), ("--interval", args.interval)],
        "connect_only": [("--size", args.size)],
        "round_trips": [],
    }[check]
    if args.mode == "stream" and args.size is not None:
        meaningless.append(("--size", args.size))
    for flag, value in meaningless:
        if value is not None:
            what = (
                "--mode stream" if flag == "--size" and check == "load" else check.replace("_", " ")
            )
            raise ValueError(f"{flag} does not apply to {what}")
    if check == "half_close" and args.tls:
        raise ValueError("--half-close does not go with --tls: TLS closes both directions at once")
    if (args.ca or args.insecure or args.sni) and not args.tls:
        raise ValueError("--ca, --insecure and --sni need --tls")
    if args.ca and args.insecure:
        raise ValueError("--ca and --insecure contradict each other; pick one")
    if bool(args.proxy_header) != bool(args.proxy_source):
        raise ValueError("--proxy-header and --proxy-source go together")


def _check_ranges(options: Options) -> None:
    ranges: list[tuple[str, float, float, float]] = [
        ("--count", options.count, 0, 1_000_000),
        ("--interval", options.interval_s, 0, 3600),
        ("--size", options.size, 1, SPAN),
        ("--connections", options.connections, 1, 10_000),
        ("--duration", options.duration_s, 0.1, MAX_DURATION_S),
        ("--window", options.window, 1, SPAN),
        ("--timeout", options.timeout_s, 0.01, 3600),
    ]
    for flag, value, low, high in ranges:
        if not low <= value <= high:
            raise ValueError(
                f"{flag}: expected {_number(low)}..{_number(high)}, got {_number(value)}"
            )
    if options.count == 0 and options.interval_s < MIN_ENDLESS_INTERVAL_S:
        raise ValueError(
            f"--count 0 runs until Ctrl-C: --interval must then be at least "
            f"{MIN_ENDLESS_INTERVAL_S:g} s (every round-trip time is kept)"
        )


def _number(value: float) -> str:
    """`value` as typed: 1048576, not 1.04858e+06; 0.1 stays 0.1."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def endpoint_for(options: Options) -> Endpoint:
    """The `Endpoint` the options describe: TLS context, source, PROXY header."""
    tls = client_context(options.ca, options.insecure) if options.tls else None
    if options.source is not None:
        try:
            ip_of(options.source)
        except ValueError:
            raise ValueError(f"--source {options.source!r}: expected an IP address") from None
    preamble = b""
    if options.proxy_header and options.proxy_source:
        source = parse_ip_port(options.proxy_source)
        preamble = proxy_header(options.proxy_header, source, (_target_ip(options), options.port))
    return Endpoint(
        options.host,
        options.port,
        tls=tls,
        server_hostname=options.sni,
        source_host=options.source,
        preamble=preamble,
    )


def _target_ip(options: Options) -> Any:
    """The target's address, for the PROXY header's destination (a name is looked up)."""
    try:
        return ip_of(options.host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(
            f"{options.target}: cannot resolve {options.host} ({exc.strerror})"
        ) from None
    return ip_of(str(infos[0][4][0]))
