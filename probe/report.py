"""The ``--json`` document of `echostat probe`: target, options, every figure, the outcome.

The document's keys, their order and their numbers are a contract with scripts (bench/,
monitoring): a figure is added, never renamed or moved.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from echostat.probe.options import Options, UDPOptions
from echostat.probe.results import Result, UDPResult


def document(options: Options | UDPOptions, result: Result | UDPResult) -> dict[str, Any]:
    """The JSON document of one run: for a TCP check the figures and then its failures
    (the first in full), for ``udp://`` the figures alone."""
    if isinstance(result, UDPResult):
        assert isinstance(options, UDPOptions)
        return {
            **_head(options, "udp", result.problem is None, result.interrupted),
            **asdict(result.figures),
            "path": None if result.path is None else result.path.document(),
        }
    assert isinstance(options, Options)
    first = result.failures[0] if result.failures else None
    return {
        **_head(options, options.check, not result.failures, result.interrupted),
        **({} if result.figures is None else asdict(result.figures)),
        "failures": len(result.failures),
        "first_failure": asdict(first) if first else None,
        "path": None if result.path is None else result.path.document(),
        "idle": None if result.idle is None else asdict(result.idle),
    }


def _head(options: Options | UDPOptions, check: str, ok: bool, interrupted: bool) -> dict[str, Any]:
    return {
        "target": options.target,
        "check": check,
        "ok": ok,
        "interrupted": interrupted,
        "options": asdict(options),
    }
