"""What the status side reads of the watcher, and the ``/api/watch`` document.

The watcher lives in `echostat.probe`, which the status side does not import: these protocols
say what it reads (the composition root, `echostat.watching`, hands it the watcher), and
`watch_document` turns that into JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class RttView(Protocol):
    @property
    def min(self) -> float: ...
    @property
    def p50(self) -> float: ...
    @property
    def p90(self) -> float: ...
    @property
    def max(self) -> float: ...


class RoundView(Protocol):
    """One round against one address (see `echostat.probe.watch_state.WatchRound`)."""

    @property
    def at(self) -> float: ...
    @property
    def sent(self) -> int: ...
    @property
    def verified(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def connect_ms(self) -> float | None: ...
    @property
    def rtt_ms(self) -> RttView | None: ...
    @property
    def late(self) -> bool: ...
    @property
    def loop_lag_ms(self) -> float: ...
    @property
    def error(self) -> str | None: ...
    @property
    def duplicated(self) -> int: ...
    @property
    def reordered(self) -> int: ...


class PointView(Protocol):
    """One bin of the chart's history (see `echostat.probe.watch_state.HistoryPoint`)."""

    @property
    def at(self) -> float: ...
    @property
    def median_ms(self) -> float | None: ...
    @property
    def min_ms(self) -> float | None: ...
    @property
    def max_ms(self) -> float | None: ...
    @property
    def sent(self) -> int: ...
    @property
    def lost(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def late_rounds(self) -> int: ...


class HistogramView(Protocol):
    """Per-bucket counts (not cumulative; the last is +Inf) and the sum, in seconds."""

    @property
    def bounds_s(self) -> tuple[float, ...]: ...
    @property
    def counts(self) -> list[int]: ...
    @property
    def sum_s(self) -> float: ...


class WatchedTarget(Protocol):
    """One watched address of one configured target."""

    @property
    def name(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def protocol(self) -> str: ...
    @property
    def up(self) -> bool: ...
    @property
    def last_round(self) -> RoundView | None: ...
    @property
    def loss_ratio_5m(self) -> float | None: ...
    @property
    def rtt(self) -> HistogramView: ...
    @property
    def connect(self) -> HistogramView: ...
    @property
    def verified_total(self) -> int: ...
    @property
    def lost_total(self) -> int: ...
    @property
    def failed_total(self) -> int: ...
    @property
    def late_rounds_total(self) -> int: ...
    def history(self) -> Sequence[PointView]: ...


class WatchSource(Protocol):
    def targets(self) -> Sequence[WatchedTarget]:
        """Every watched address, in a stable order."""
        ...


_ROUND = (
    "at",
    "sent",
    "verified",
    "lost",
    "failed",
    "connect_ms",
    "late",
    "loop_lag_ms",
    "error",
    "duplicated",
    "reordered",
)
_POINT = ("at", "median_ms", "min_ms", "max_ms", "sent", "lost", "failed", "late_rounds")


def watch_document(targets: Sequence[WatchedTarget], history: bool = True) -> dict[str, Any]:
    """``{"targets": [...]}``, one item per watched address (`WatchSource.targets`); with
    `history`, each carries the last hour's chart points, else only the newest (what the push
    feed sends every tick)."""
    return {"targets": [_target_document(target, history) for target in targets]}


def _target_document(target: WatchedTarget, history: bool) -> dict[str, Any]:
    points = target.history()
    return {
        "name": target.name,
        "target": target.target,
        "address": target.address,
        "protocol": target.protocol,
        "up": target.up,
        "last_round": _round_document(target.last_round),
        "loss_ratio_5m": target.loss_ratio_5m,
        "late_rounds": target.late_rounds_total,
        "history": [
            {key: getattr(point, key) for key in _POINT}
            for point in (points if history else points[-1:])
        ],
    }


def _round_document(found: RoundView | None) -> dict[str, Any] | None:
    if found is None:
        return None
    document = {key: getattr(found, key) for key in _ROUND}
    rtt = found.rtt_ms
    document["rtt_ms"] = (
        None
        if rtt is None
        else {
            "min": rtt.min,
            "p50": rtt.p50,
            "p90": rtt.p90,
            "max": rtt.max,
        }
    )
    return document
