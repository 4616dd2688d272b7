"""The benchmark plan: the cells (a load generator mode with its parameters), the quick and
full matrices, and how long each measurement lasts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pingpong", "stream", "hold", "churn", "churn-half-close", "p99"]
"""A load generator mode (loadgen.py's first argument); "p99" only names the report's p99
column, which shows the pingpong cell 64 B x100's latency."""


@dataclass(frozen=True)
class Cell:
    """One measurement: a load generator mode with its parameters."""

    key: str
    label: str
    mode: Mode
    connections: int
    size: int = 0
    extra: tuple[str, ...] = ()
    echostat_only: bool = False
    tls: bool = False

    def loadgen_args(self, connections: int | None = None) -> list[str]:
        args = [self.mode, "--connections", str(connections or self.connections), *self.extra]
        args += ["--tls"] if self.tls else []
        return args + (["--size", str(self.size)] if self.size else [])

    @property
    def churns(self) -> bool:
        return self.mode.startswith("churn")


def pingpong(size: int, connections: int) -> Cell:
    label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
    return Cell(
        f"pingpong-{size}x{connections}", f"{label} x{connections}", "pingpong", connections, size
    )


def stream(connections: int) -> Cell:
    return Cell(f"stream-x{connections}", f"stream x{connections}", "stream", connections)


CHURN_BYTES = 16
"""What each churning connection echoes before it closes."""


def churn(connections: int, half_close: bool = False) -> Cell:
    """Connect, echo 16 bytes, close (the client first), again, on `connections` at once."""
    mode: Mode = "churn-half-close" if half_close else "churn"
    return Cell(f"{mode}-x{connections}", f"{mode} x{connections}", mode, connections, CHURN_BYTES)


def tls_handshakes(connections: int) -> Cell:
    """`churn` over TLS: every connection is a new full handshake."""
    label = f"TLS handshakes x{connections}"
    return Cell(f"tls-churn-x{connections}", label, "churn", connections, CHURN_BYTES, tls=True)


def tls_stream(connections: int) -> Cell:
    label = f"TLS stream x{connections}"
    return Cell(f"tls-stream-x{connections}", label, "stream", connections, tls=True)


STATUS_CELL = Cell(
    "status-pingpong-64x100",
    "/api/stats under 64 B x100",
    "pingpong",
    100,
    64,
    ("--probe-stats",),
    echostat_only=True,
)


PAGE_WITH_10K_CELL = Cell(
    "idle10000-sse1-pingpong-64x100",
    "64 B x100 + 10,000 idle + page",
    "pingpong",
    100,
    64,
    ("--idle", "10000", "--connect-rate", "5000", "--subscribers", "1", "--probe-stats"),
    echostat_only=True,
)
"""Echo and GET /api/stats while 10,000 connections are open and a page is subscribed."""


def subscribers_cell(base: Cell, count: int) -> Cell:
    """`base` again while `count` dashboards are subscribed to /api/events."""
    return Cell(
        f"sse{count}-{base.key}",
        f"{base.label} + {count} SSE",
        base.mode,
        base.connections,
        base.size,
        (*base.extra, "--subscribers", str(count)),
        echostat_only=True,
    )


HOLD_CONNECT_RATE = 5000
"""New connections per second in the hold cell: a burst of 10,000 at once overflows the
listen queue of servers with a small backlog, which measures the backlog, not memory."""


def hold_cell(connections: int) -> Cell:
    """Server memory per idle connection, with `connections` open."""
    pacing = ("--connect-rate", str(HOLD_CONNECT_RATE))
    return Cell(
        f"hold-{connections}", f"idle KiB/conn ({connections:,})", "hold", connections, extra=pacing
    )


@dataclass
class Plan:
    """What one invocation measures and how long each measurement lasts."""

    name: str
    reps: int
    duration_s: float
    warmup_s: float
    hold_connections: int
    cells: list[Cell]
    sse_cells: list[Cell] = field(default_factory=list)
    extra_cells: list[Cell] = field(default_factory=lambda: [STATUS_CELL, PAGE_WITH_10K_CELL])
    busy_retries: int = 2
    """How often a cell run while other processes kept the machine busy is run again."""

    @property
    def hold(self) -> Cell:
        """The idle memory cell (run only if `hold_connections` is not 0)."""
        return hold_cell(self.hold_connections)

    def every_cell(self) -> list[Cell]:
        """All cells in the order they run: idle memory first, on fresh servers."""
        hold = [self.hold] if self.hold_connections else []
        return [*hold, *self.cells, *self.extra_cells, *self.sse_cells]

    def keep_only(self, patterns: Sequence[str]) -> None:
        """Drop every cell whose label contains none of `patterns`."""

        def wanted(cell: Cell) -> bool:
            return any(p in cell.label for p in patterns)

        self.cells = [c for c in self.cells if wanted(c)]
        self.sse_cells = [c for c in self.sse_cells if wanted(c)]
        self.extra_cells = [c for c in self.extra_cells if wanted(c)]
        if not wanted(self.hold):
            self.hold_connections = 0


def make_plan(quick: bool, subscribers: int) -> Plan:
    """The quick or the full matrix, with `subscribers` dashboards in the SSE cells."""
    if quick:
        cells = [pingpong(64, 1), pingpong(64, 100), pingpong(1024, 10), stream(10)]
        cells += [churn(32), churn(32, half_close=True), tls_handshakes(32), tls_stream(10)]
        plan = Plan("quick", 1, 0.75, 0.2, 1000, cells)
        plan.sse_cells = [subscribers_cell(pingpong(64, 100), subscribers)]
    else:
        cells = [
            pingpong(64, 1),
            pingpong(64, 10),
            pingpong(64, 100),
            pingpong(1024, 10),
            pingpong(1024, 100),
            pingpong(16384, 10),
            stream(1),
            stream(10),
            *(churn(n, half_close) for half_close in (False, True) for n in (1, 32, 256)),
            tls_handshakes(1),
            tls_handshakes(32),
            tls_stream(1),
            tls_stream(10),
        ]
        plan = Plan("full", 5, 1.2, 0.3, 10_000, cells)
        plan.sse_cells = [subscribers_cell(c, subscribers) for c in (pingpong(64, 100), stream(10))]
    return plan


def plan_parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark plan takes: --quick (described by
    `quick_help`), --reps and --duration."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--reps", type=int, help="repetitions (default: 1 quick, 3 full)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
    return parser
