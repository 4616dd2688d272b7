"""Turns the flags of ``echostat probe`` into checked options: `Options` for a TCP target,
`UDPOptions` for a ``udp://`` one, and the TCP `Endpoint`; ValueError names what is wrong."""

from __future__ import annotations

import argparse
import math
import socket
from typing import TypeVar, cast

from echostat.probe.address import IPAddress, parse_host_port, parse_ip_port
from echostat.probe.options import (
    DEFAULT_CONNECTIONS,
    DEFAULT_COUNT,
    DEFAULT_DURATION_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_LOSS_PERCENT,
    DEFAULT_MODE,
    DEFAULT_PERCENTILES,
    DEFAULT_SIZE,
    DEFAULT_WINDOW,
    MAX_COUNT,
    MAX_DURATION_S,
    MAX_SEED,
    MIN_ENDLESS_INTERVAL_S,
    Check,
    Mode,
    Options,
    ProxyVersion,
    UDPOptions,
    draw_seed,
)
from echostat.probe.pattern import SPAN
from echostat.probe.proxy_header import ip_of, proxy_header
from echostat.probe.session import Endpoint
from echostat.probe.tls import client_context
from echostat.probe.udp import MAX_SIZE, MIN_SIZE

UDP_SCHEME = "udp://"

TCP_ONLY_FLAGS = (
    "--half-close",
    "--connect-only",
    "--connections",
    "--duration",
    "--mode",
    "--window",
    "--tls",
    "--ca",
    "--insecure",
    "--sni",
    "--proxy-header",
    "--proxy-source",
)
"""Flags of `echostat probe` that only mean something on a TCP connection."""

UDP_ONLY_FLAGS = ("--max-loss",)

MAX_PERCENTILES = 10
"""Percentiles ``--percentiles`` may list: enough for any tail, few enough for one line."""

_T = TypeVar("_T")


def options_from(args: argparse.Namespace) -> Options | UDPOptions:
    """The options of the check `args` name, defaults filled in and flags checked together."""
    if args.target.startswith(UDP_SCHEME):
        return _udp_options(args)
    scheme, colon_slashes, _ = args.target.partition("://")
    if colon_slashes:
        raise ValueError(
            f"{args.target!r}: {scheme}:// is not an echo target; "
            "expected HOST:PORT for TCP or udp://HOST:PORT"
        )
    _refuse_given(args, UDP_ONLY_FLAGS, "only for udp:// targets")
    return _tcp_options(args)


def percentiles_from(args: argparse.Namespace) -> tuple[float, ...]:
    """The percentiles `--percentiles` lists (e.g. ``50,90,99,99.9``), or p50, p90, p99."""
    if args.percentiles is None:
        return DEFAULT_PERCENTILES
    try:
        wanted = tuple(float(part) for part in args.percentiles.split(","))
    except ValueError:
        wanted = ()
    if not wanted or len(wanted) > MAX_PERCENTILES or not all(0 < p <= 100 for p in wanted):
        raise ValueError(
            f"--percentiles: expected up to {MAX_PERCENTILES} numbers in 0 < p <= 100 "
            f"separated by commas, e.g. 50,90,99,99.9; got {args.percentiles!r}"
        )
    return wanted


def seed_from(args: argparse.Namespace) -> int:
    """The seed `--seed` gives, or one drawn for this run."""
    if args.seed is None:
        return draw_seed()
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed: expected 0..{MAX_SEED}, got {args.seed}")
    seed: int = args.seed
    return seed


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _refuse_given(args: argparse.Namespace, flags: tuple[str, ...], why: str) -> None:
    """ValueError naming the first of `flags` that was given (read at argparse's dest for it)."""
    for flag in flags:
        if getattr(args, flag[2:].replace("-", "_")) not in (None, False):
            raise ValueError(f"{flag}: {why}")


def _tcp_options(args: argparse.Namespace) -> Options:
    host, port = parse_host_port(args.target)
    load_flags = [
        flag
        for flag, value in (
            ("--connections", args.connections),
            ("--duration", args.duration),
            ("--mode", args.mode),
            ("--window", args.window),
            ("--rate", args.rate),
        )
        if value is not None
    ]
    check: Check = "round_trips"
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
        count=_or(args.count, DEFAULT_COUNT),
        interval_s=_or(args.interval, DEFAULT_INTERVAL_S),
        size=_or(args.size, DEFAULT_SIZE),
        connections=_or(args.connections, DEFAULT_CONNECTIONS),
        duration_s=_or(args.duration, DEFAULT_DURATION_S),
        mode=cast(Mode, _or(args.mode, DEFAULT_MODE)),  # argparse's choices are Mode's words
        window=_or(args.window, DEFAULT_WINDOW),
        timeout_s=args.timeout,
        source=args.source,
        tls=args.tls,
        ca=args.ca,
        insecure=args.insecure,
        sni=args.sni,
        proxy_header=cast(ProxyVersion | None, args.proxy_header),
        proxy_source=args.proxy_source,
        json=args.json,
        seed=seed_from(args),
        percentiles=percentiles_from(args),
        rate_per_s=None if args.rate is None else _parse_rate(args.rate, "round trips"),
    )
    _check_ranges(options)
    return options


def _refuse(check: Check, args: argparse.Namespace) -> None:
    """Flags that mean nothing for `check` are an error, not silently ignored."""
    meaningless = {
        "load": [("--count", args.count), ("--interval", args.interval)],
        "half_close": [("--count", args.count), ("--interval", args.interval)],
        "connect_only": [("--size", args.size)],
        "round_trips": [],
    }[check]
    if args.mode == "stream":
        meaningless += [("--size", args.size), ("--rate", args.rate)]
    for flag, value in meaningless:
        if value is not None:
            what = (
                "--mode stream"
                if flag in ("--size", "--rate") and check == "load"
                else check.replace("_", " ")
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


INTERVAL_RANGE_S = (0, 3600)
TIMEOUT_RANGE_S = (0.01, 3600)
"""--interval and --timeout take the same seconds for TCP and udp:// targets."""


def _check_ranges(options: Options) -> None:
    ranges: list[tuple[str, float, float, float]] = [
        ("--count", options.count, 0, MAX_COUNT),
        ("--interval", options.interval_s, *INTERVAL_RANGE_S),
        ("--size", options.size, 1, SPAN),
        ("--connections", options.connections, 1, 10_000),
        ("--duration", options.duration_s, 0.1, MAX_DURATION_S),
        ("--window", options.window, 1, SPAN),
        ("--timeout", options.timeout_s, *TIMEOUT_RANGE_S),
    ]
    for flag, value, low, high in ranges:
        _check_range(flag, value, low, high)
    _check_endless(options.count, options.interval_s)


def _check_range(flag: str, value: float, low: float, high: float) -> None:
    """ValueError naming `flag` unless low <= `value` <= high (NaN is not)."""
    if not low <= value <= high:
        raise ValueError(f"{flag}: expected {_number(low)}..{_number(high)}, got {_number(value)}")


def _check_endless(count: int, interval_s: float, by_rate: bool = False) -> None:
    """With --count 0 every round-trip time is kept until Ctrl-C: bound how fast they pile up,
    naming the flag that set the pace."""
    if count == 0 and interval_s < MIN_ENDLESS_INTERVAL_S:
        if by_rate:
            raise ValueError(
                f"--count 0 runs until Ctrl-C: --rate must then be at most "
                f"{1 / MIN_ENDLESS_INTERVAL_S:g}/s (every round-trip time is kept); give a --count"
            )
        raise ValueError(
            f"--count 0 runs until Ctrl-C: --interval must then be at least "
            f"{MIN_ENDLESS_INTERVAL_S:g} s (every round-trip time is kept)"
        )


def _number(value: float) -> str:
    """`value` as typed: 1048576, not 1.04858e+06; 0.1 stays 0.1."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _udp_options(args: argparse.Namespace) -> UDPOptions:
    host, port = parse_host_port(args.target.removeprefix(UDP_SCHEME), UDP_SCHEME)
    _refuse_given(args, TCP_ONLY_FLAGS, "not available for udp:// targets")
    interval_s = _or(args.interval, DEFAULT_INTERVAL_S)
    if args.rate is not None:
        if args.interval is not None:
            raise ValueError("--rate and --interval: give one or the other")
        interval_s = 1 / _parse_rate(args.rate, "datagrams")
    options = UDPOptions(
        host=host,
        port=port,
        count=_or(args.count, DEFAULT_COUNT),
        size=_or(args.size, DEFAULT_SIZE),
        interval_s=interval_s,
        timeout_s=args.timeout,
        max_loss_percent=_or(args.max_loss, DEFAULT_MAX_LOSS_PERCENT),
        source=args.source,
        seed=seed_from(args),
        percentiles=percentiles_from(args),
    )
    _check_source(options.source, host)
    if not MIN_SIZE <= options.size <= MAX_SIZE:
        raise ValueError(f"--size: expected {MIN_SIZE}..{MAX_SIZE} for udp://, got {options.size}")
    if not 0 <= options.count <= MAX_COUNT:
        raise ValueError(f"--count: expected 0 (until Ctrl-C)..{MAX_COUNT}, got {options.count}")
    if args.rate is None:
        _check_range("--interval", interval_s, *INTERVAL_RANGE_S)
    _check_endless(options.count, interval_s, by_rate=args.rate is not None)
    _check_range("--timeout", options.timeout_s, *TIMEOUT_RANGE_S)
    if not 0 <= options.max_loss_percent <= 100:
        raise ValueError(f"--max-loss: expected 0..100, got {options.max_loss_percent:g}")
    return options


def _parse_rate(text: str, what: str) -> float:
    number = text.removesuffix("/s")
    try:
        rate = float(number)
    except ValueError:
        rate = math.nan
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"--rate: expected a positive number of {what} per second, got {text}")
    return rate


def endpoint_for(options: Options) -> Endpoint:
    """The `Endpoint` the options describe: TLS context, source, PROXY header."""
    tls = client_context(options.ca, options.insecure) if options.tls else None
    _check_source(options.source, options.host)
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


def _check_source(source: str | None, host: str) -> None:
    """ValueError naming --source unless it is an IP address (or not given) of the family of
    `host`, when `host` is an address too (a name's family is known once it resolves)."""
    if source is None:
        return
    try:
        source_ip = ip_of(source)
    except ValueError:
        raise ValueError(f"--source {source!r}: expected an IP address") from None
    try:
        target_ip = ip_of(host)
    except ValueError:
        return
    if source_ip.version != target_ip.version:
        raise ValueError(
            f"--source {source} is IPv{source_ip.version} but the target {host} is "
            f"IPv{target_ip.version}; use a source of the target's family"
        )


def _target_ip(options: Options) -> IPAddress:
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
