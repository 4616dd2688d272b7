"""The flags of ``echostat probe`` that look at the path itself: ``--path`` with the marks it
sends (``--dscp --ttl --mss``) and ``--fail-on``, and ``--idle-timeout``."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, get_args

from echostat.probe.idle import MAX_IDLE_S
from echostat.probe.marks import Marks, parse_dscp
from echostat.probe.path_view import Finding

FINDINGS: tuple[Finding, ...] = get_args(Finding)

MAX_MSS = 32767
"""The largest TCP_MAXSEG Linux takes (MAX_TCP_WINDOW); above it setsockopt fails, EINVAL."""


@dataclass(frozen=True)
class PathOptions:
    """What the path flags ask for, checked."""

    path: bool
    marks: Marks
    fail_on: tuple[Finding, ...]
    idle_timeout_s: float | None
    idle_resolution_s: float | None

    def document(self) -> dict[str, Any]:
        """The flags as the ``--json`` document's ``options`` shows them, after the others."""
        return {
            "path": self.path,
            "dscp": self.marks.dscp,
            "ttl": self.marks.ttl,
            "mss": self.marks.mss,
            "fail_on": list(self.fail_on),
            "idle_timeout_s": self.idle_timeout_s,
            "idle_resolution_s": self.idle_resolution_s,
        }


def add_path_flags(parser: argparse.ArgumentParser) -> None:
    """Add the path flags to the ``probe`` subcommand's parser."""
    group = parser.add_argument_group(
        "path (with an echostat listener that has report: true, e.g. port 7008)"
    )
    group.add_argument(
        "--path",
        action="store_true",
        help="first compare what the probe sent with what the server saw arrive (address, TTL, "
        "DSCP, ECN, MSS, TCP options) and name the middleboxes between them",
    )
    group.add_argument(
        "--dscp", metavar="VALUE", help="DSCP to send: 0..63 or a name (EF, AF11..AF43, CS0..CS7)"
    )
    group.add_argument("--ttl", type=int, metavar="N", help="TTL (IPv6: hop limit) to send, 1..255")
    group.add_argument(
        "--mss", type=int, metavar="BYTES", help=f"TCP MSS to advertise in the SYN, 88..{MAX_MSS}"
    )
    group.add_argument(
        "--fail-on",
        metavar="FINDING[,FINDING...]",
        help=f"with --path, exit 1 if any of these is found: {', '.join(FINDINGS)}",
    )
    group.add_argument(
        "--idle-timeout",
        type=float,
        metavar="MAX_S",
        help=f"find how long a connection may sit idle, up to MAX_S (at most {MAX_IDLE_S}): "
        "doubling, then bisecting; says whether the path then resets or drops silently",
    )
    group.add_argument(
        "--idle-resolution",
        type=float,
        metavar="S",
        help="--idle-timeout: stop bisecting at this many seconds (default: a tenth of the "
        "shortest failing period, at least 1)",
    )


def path_options_from(args: argparse.Namespace, udp: bool) -> PathOptions:
    """The path flags of `args`, checked; ValueError names the flag that is wrong."""
    dscp = None if args.dscp is None else parse_dscp(args.dscp)
    if args.ttl is not None and not 1 <= args.ttl <= 255:
        raise ValueError(f"--ttl: expected 1..255, got {args.ttl}")
    if args.mss is not None:
        if udp:
            raise ValueError("--mss: not available for udp:// targets (it is a TCP option)")
        if not 88 <= args.mss <= MAX_MSS:
            raise ValueError(f"--mss: expected 88..{MAX_MSS}, got {args.mss}")
    fail_on = _findings(args.fail_on)
    for finding in fail_on:
        if (why := _never_found(finding, udp)) is not None:
            raise ValueError(f"--fail-on: {finding} can't be found here: {why}")
    if fail_on and not args.path:
        raise ValueError("--fail-on judges what --path finds: add --path")
    if args.idle_timeout is not None:
        _check_idle(args, udp)
    elif args.idle_resolution is not None:
        raise ValueError("--idle-resolution goes with --idle-timeout")
    return PathOptions(
        path=args.path,
        marks=Marks(dscp=dscp, ttl=args.ttl, mss=args.mss),
        fail_on=fail_on,
        idle_timeout_s=args.idle_timeout,
        idle_resolution_s=args.idle_resolution,
    )


def _findings(text: str | None) -> tuple[Finding, ...]:
    if text is None:
        return ()
    named: list[Finding] = []
    for word in (part.strip() for part in text.split(",")):
        if word not in FINDINGS:
            raise ValueError(f"--fail-on: unknown finding {word!r}; expected {', '.join(FINDINGS)}")
        named.append(word)
    return tuple(named)


def _never_found(finding: Finding, udp: bool) -> str | None:
    """Why `finding` can never be found on a TCP (or, `udp`, a UDP) target; None if it can."""
    if udp and finding in ("mss_clamped", "options_stripped"):
        return "it is a TCP finding, which udp:// targets don't show"
    if not udp and finding == "ecn_bleached":
        return "a TCP SYN is never ECN-capable, so udp:// targets alone show it"
    return None


def _check_idle(args: argparse.Namespace, udp: bool) -> None:
    if udp:
        raise ValueError("--idle-timeout: not available for udp:// targets (UDP has no connection)")
    if not 1 <= args.idle_timeout <= MAX_IDLE_S:
        raise ValueError(
            f"--idle-timeout: expected 1..{MAX_IDLE_S} seconds, got {args.idle_timeout:g}"
        )
    if args.idle_resolution is not None and not 0.1 <= args.idle_resolution <= MAX_IDLE_S:
        raise ValueError(
            f"--idle-resolution: expected 0.1..{MAX_IDLE_S} seconds, got {args.idle_resolution:g}"
        )
    # The search sends its own small echoes on its own schedule: the other checks' flags
    # would be ignored, so they are refused.
    given = [
        flag
        for flag in (
            "half_close",
            "connect_only",
            "tls",
            "connections",
            "duration",
            "mode",
            "count",
            "interval",
            "size",
            "window",
            "rate",
            "percentiles",
        )
        if getattr(args, flag) not in (None, False)
    ]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"--idle-timeout is a check of its own; it does not go with {flag}")
