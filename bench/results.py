"""What a measurement yields: one load generator run of a cell (`CellResult`), the medians of
a cell's repetitions (`Summary`), and the figures derived from them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from busy import BUSY_CORES
from plan import Cell, Mode

COUNTED = ("pingpong", "churn", "churn-half-close")
"""The modes that count round trips (pingpong) or connections (churn) per second, each timed
(p50/p99); stream counts MB/s, hold memory."""


@dataclass(frozen=True)
class StatusFigures:
    """GET /api/stats timings taken while the echo load ran (``--probe-stats``)."""

    requests: int
    p50_us: float
    p99_us: float


_FIGURES = (
    "round_trips_per_s",
    "connections_per_s",
    "mb_per_s",
    "p50_us",
    "p99_us",
    "server_cpu",
    "client_cpu",
    "proxy_cpu",
    "served_min",
    "served_max",
    "failures",
    "bytes_per_connection",
    "proxy_bytes_per_connection",
    "load_average",
    "other_cores",
)
"""The keys of loadgen's JSON that `CellResult` has as fields of the same name (absent: None)."""


@dataclass(frozen=True)
class CellResult:
    """One run of one cell, as loadgen.py reports it (merged, for several load generators).

    `document` is loadgen's JSON object itself: it goes into the results file unchanged, so
    result files keep loadgen's keys; the other fields are the figures this side reads."""

    mode: Mode
    connections: int
    document: dict[str, Any] = field(repr=False)
    round_trips_per_s: float | None = None
    connections_per_s: float | None = None
    mb_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    server_cpu: float | None = None
    client_cpu: float | None = None
    proxy_cpu: float | None = None
    served_min: int | None = None
    served_max: int | None = None
    failures: dict[str, int] | None = None
    bytes_per_connection: float | None = None
    proxy_bytes_per_connection: float | None = None
    status: StatusFigures | None = None
    subscribers: int | None = None
    subscriber_min_events: int | None = None
    load_average: float | None = None
    """The machine's 1-minute load average when the run ended (measure.py adds it)."""
    other_cores: float | None = None
    """Cores that processes outside the benchmark kept busy meanwhile (measure.py adds it)."""

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CellResult:
        """The result of loadgen's JSON object `document` (the keys its mode has)."""
        status = document.get("status")
        subscribers = document.get("subscribers")
        return cls(
            mode=document["mode"],
            connections=document["connections"],
            document=document,
            **{key: document.get(key) for key in _FIGURES},
            status=None
            if status is None
            else StatusFigures(status["requests"], status["p50_us"], status["p99_us"]),
            subscribers=None if subscribers is None else subscribers["count"],
            subscriber_min_events=None if subscribers is None else subscribers["min_events"],
        )

    @property
    def fairness(self) -> float | None:
        """Most served connection's bytes over the least served's; None for one connection."""
        if self.connections < 2 or self.served_min is None or self.served_max is None:
            return None
        return self.served_max / self.served_min if self.served_min else float("inf")

    @property
    def cpu_cost(self) -> float | None:
        """Server CPU µs per round trip (pingpong), per connection (churn) or per MB (stream).

        Unlike throughput, this barely moves when other work on the machine takes CPU time
        away from the server, so its ratios are the steadier comparison on a shared machine.
        """
        per_s = rate(self.mode, self)
        return self.server_cpu / per_s * 1e6 if per_s and self.server_cpu is not None else None


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class Summary:
    """A server's measurement of one cell: medians over the repetitions.

    `to_json` writes the keys its mode has, as the results files always had them."""

    mode: Mode
    reps: int
    round_trips_per_s: float | None = None
    connections_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    failures: int | None = None
    mb_per_s: float | None = None
    fairness: float | None = None
    server_cpu: float | None = None
    client_cpu: float | None = None
    server_cpu_us_per_unit: float | None = None
    bytes_per_connection: float | None = None
    status_p50_us: float | None = None
    status_p99_us: float | None = None
    status_requests: float | None = None
    subscribers: int | None = None
    subscriber_min_events: int | None = None
    connections: int | None = None
    """scale.py: the connections actually opened (HAProxy may hold fewer than asked)."""
    proxy_cpu: float | None = None
    """With a proxy in front (scale.py's HAProxy rows), its share; likewise its memory below."""
    proxy_bytes_per_connection: float | None = None
    other_cores: float | None = None
    """The most that other processes kept busy during any repetition, in cores."""
    busy_reps: int = 0
    """Repetitions measured while other processes kept more than `busy.BUSY_CORES` busy."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reps": self.reps}
        if self.mode in COUNTED:
            if self.mode == "pingpong":
                out["round_trips_per_s"] = self.round_trips_per_s
            else:
                out["connections_per_s"] = self.connections_per_s
            out |= {"p50_us": self.p50_us, "p99_us": self.p99_us}
        if self.failures is not None:
            out["failures"] = self.failures
        if self.mode == "hold":
            out["bytes_per_connection"] = self.bytes_per_connection
        else:
            if self.mode in ("pingpong", "stream"):
                out |= {"mb_per_s": self.mb_per_s, "fairness": self.fairness}
            out |= {"server_cpu": self.server_cpu, "client_cpu": self.client_cpu}
            out["server_cpu_us_per_unit"] = self.server_cpu_us_per_unit
        if self.status_requests is not None:
            out["status_p50_us"] = self.status_p50_us
            out["status_p99_us"] = self.status_p99_us
            out["status_requests"] = self.status_requests
        if self.subscribers is not None:
            out["subscribers"] = self.subscribers
            out["subscriber_min_events"] = self.subscriber_min_events
        if self.other_cores is not None:
            out |= {"other_cores": self.other_cores, "busy_reps": self.busy_reps}
        extras = ("connections", "proxy_cpu", "proxy_bytes_per_connection")
        return out | {key: getattr(self, key) for key in extras if getattr(self, key) is not None}


def summarize(runs: Sequence[CellResult]) -> Summary:
    """Medians over the repetitions of one cell."""
    first = runs[0]
    statuses = [r.status for r in runs if r.status is not None]
    failures = None
    if first.failures is not None:
        failures = sum(sum(r.failures.values()) for r in runs if r.failures is not None)
    min_events = [r.subscriber_min_events for r in runs if r.subscriber_min_events is not None]
    others = [r.other_cores for r in runs if r.other_cores is not None]
    return Summary(
        mode=first.mode,
        reps=len(runs),
        round_trips_per_s=median([r.round_trips_per_s for r in runs]),
        connections_per_s=median([r.connections_per_s for r in runs]),
        p50_us=median([r.p50_us for r in runs]),
        p99_us=median([r.p99_us for r in runs]),
        failures=failures,
        mb_per_s=median([r.mb_per_s for r in runs]),
        fairness=median([r.fairness for r in runs]),
        server_cpu=median([r.server_cpu for r in runs]),
        client_cpu=median([r.client_cpu for r in runs]),
        server_cpu_us_per_unit=median([r.cpu_cost for r in runs]),
        bytes_per_connection=median([r.bytes_per_connection for r in runs]),
        status_p50_us=median([s.p50_us for s in statuses]),
        status_p99_us=median([s.p99_us for s in statuses]),
        status_requests=median([s.requests for s in statuses]),
        subscribers=first.subscribers,
        subscriber_min_events=min(min_events) if min_events else None,
        proxy_cpu=median([r.proxy_cpu for r in runs]),
        proxy_bytes_per_connection=median([r.proxy_bytes_per_connection for r in runs]),
        other_cores=max(others) if others else None,
        busy_reps=sum(other > BUSY_CORES for other in others),
    )


def rate(mode: Mode, figures: CellResult | Summary) -> float | None:
    """The throughput figure of `mode`: round trips/s, connections/s or MB/s."""
    if mode == "pingpong":
        return figures.round_trips_per_s
    if mode in COUNTED:
        return figures.connections_per_s
    return figures.mb_per_s


def headline(cell: Cell, summary: Summary | None) -> float | None:
    """The number a cell is ranked by: round trips/s, MB/s or KiB per idle connection."""
    if summary is None:
        return None
    if cell.mode == "hold":
        found = summary.bytes_per_connection
        return None if found is None else found / 1024
    return rate(cell.mode, summary)
