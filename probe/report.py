"""The ``--json`` document of `echostat probe`: target, options, every figure, the outcome.

The document's keys, their order and their numbers are a contract with scripts (bench/,
monitoring): a figure is added, never renamed or moved.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from echostat.probe.options import Options, UDPOptions
from echostat.probe.results import Figures, LoadFigures, Result, UDPResult


def document(options: Options | UDPOptions, result: Result | UDPResult) -> dict[str, Any]:
    """The JSON document of one run: for a TCP check the figures and then its failures
    (the first in full), for ``udp://`` the figures alone."""
    if isinstance(result, UDPResult):
        assert isinstance(options, UDPOptions)
        return {
            **_head(options, "udp", result.problem is None, result.interrupted),
            **asdict(result.figures),
        }
    assert isinstance(options, Options)
    first = result.failures[0] if result.failures else None
    return {
        **_head(options, options.check, not result.failures, result.interrupted),
        **_figures(result.figures),
        "failures": len(result.failures),
        "first_failure": asdict(first) if first else None,
    }


def _head(options: Options | UDPOptions, check: str, ok: bool, interrupted: bool) -> dict[str, Any]:
    return {
        "target": options.target,
        "check": check,
        "ok": ok,
        "interrupted": interrupted,
        "options": asdict(options),
    }


def _figures(figures: Figures | None) -> dict[str, Any]:
    """A check's figures as the document's top-level keys; none when it could not connect."""
    if figures is None:
        return {}
    if not isinstance(figures, LoadFigures):
        return asdict(figures)
    found = {
        "seconds": figures.seconds,
        "connections": asdict(figures.connections),
        "connect_ms": asdict(figures.connect_ms),
        "tls": None if figures.tls is None else asdict(figures.tls),
        "bytes_verified": figures.bytes_verified,
        "mb_per_s": figures.mb_per_s,
    }
    if (round_trips := figures.round_trips) is None:
        return found | {"bytes_sent": figures.bytes_sent}
    return found | {
        "sent": round_trips.sent,
        "verified": round_trips.verified,
        "failed": round_trips.failed,
        "bytes_sent": figures.bytes_sent,
        "round_trips_per_s": round_trips.per_s,
        "rtt_ms": asdict(round_trips.rtt_ms),
    }
