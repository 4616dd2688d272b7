"""The ``--json`` document of `echostat probe`: target, options, every figure, the outcome.

The document's keys, their order and their numbers are a contract with scripts (bench/,
monitoring): a figure is added, never renamed or moved. A check has the same keys however
it ends: a figure nothing is known of (the host was unknown, the connection was refused) is
null, and `RunFacts` ends every document.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from echostat.probe.options import Options, UDPOptions
from echostat.probe.path_flags import PathOptions
from echostat.probe.results import (
    ConnectFigures,
    Figures,
    HalfCloseFigures,
    PingPongLoadFigures,
    Result,
    RoundTripFigures,
    RunFacts,
    StreamLoadFigures,
    UDPFigures,
    UDPResult,
)


def document(
    options: Options | UDPOptions, path: PathOptions, result: Result | UDPResult, facts: RunFacts
) -> dict[str, Any]:
    """The JSON document of one run: for a TCP check the figures and then its failures
    (the first in full), for ``udp://`` the figures alone; then `facts`. It is ``ok`` when
    nothing failed and `facts` names no error (a finding --fail-on names is one)."""
    ok = facts.error is None
    if isinstance(result, UDPResult):
        assert isinstance(options, UDPOptions)
        return {
            **_head(options, path, "udp", ok, result.interrupted),
            **_figures(result.figures, UDPFigures),
            "path": None if result.path is None else result.path.document(),
            "idle": None,
            **asdict(facts),
        }
    assert isinstance(options, Options)
    first = result.failures[0] if result.failures else None
    return {
        **_head(options, path, options.check, ok and not result.failures, result.interrupted),
        **_figures(result.figures, _figures_of(options)),
        "failures": len(result.failures),
        "first_failure": asdict(first) if first else None,
        "path": None if result.path is None else result.path.document(),
        "idle": None if result.idle is None else asdict(result.idle),
        **asdict(facts),
    }


def _figures_of(options: Options) -> type | None:
    """The class of the figures `options`' check reports; None for ``--idle-timeout``, whose
    findings are the ``idle`` object."""
    if options.check == "idle_timeout":
        return None
    if options.check == "load":
        return StreamLoadFigures if options.mode == "stream" else PingPongLoadFigures
    return {
        "round_trips": RoundTripFigures,
        "half_close": HalfCloseFigures,
        "connect_only": ConnectFigures,
    }[options.check]


def _figures(figures: Figures | UDPFigures | None, kind: type | None) -> dict[str, Any]:
    """The figures as JSON keys; every key of `kind` with null when there are none."""
    if figures is None:
        return {} if kind is None else {field.name: None for field in fields(kind)}
    return asdict(figures)


def _head(
    options: Options | UDPOptions, path: PathOptions, check: str, ok: bool, interrupted: bool
) -> dict[str, Any]:
    return {
        "target": options.target,
        "check": check,
        "ok": ok,
        "interrupted": interrupted,
        "options": {**asdict(options), **path.document()},
    }
