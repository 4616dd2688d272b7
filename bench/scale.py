"""Measure what scaling echostat costs: one worker or two, direct or behind HAProxy.

Four servers (echostat with ``workers: 1`` and ``workers: 2``, each reached directly and
through a local HAProxy that speaks PROXY protocol v2 to it) go through the same cells:
pingpong with 1, 100 and 10,000 connections, streaming over 10, and 10,000 idle connections
(server memory per connection). Every configuration runs in two pinnings: server side on CPU 0
and load generator on CPU 1 (what a second worker or a proxy hop costs when no core is added),
and unpinned (what a second worker gains when the kernel may use both cores). The medians go
into a Markdown report, with each row's ratio to ``workers 1 direct``, and a JSON file under
``bench/results/``. Any echo mismatch or failed cell stops the run with a non-zero exit.

    .venv/bin/python bench/scale.py --quick    # about 75 s
    .venv/bin/python bench/scale.py            # the full run, about 9 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from haproxy import haproxy_capacity, haproxy_started, haproxy_version
from measure import Measurement, run_loadgen
from plan import Cell, Plan, hold_cell, pingpong, plan_parser, stream
from report import date, fmt, load_average, machine, table, write_results
from results import Summary
from servers import BENCH, Running, Server, pin_cpus, started

BEHIND_PROXY = ("listeners.0.proxy_protocol=true", "listeners.0.proxy_trusted=[127.0.0.0/8]")


@dataclass(frozen=True)
class Row:
    """One server configuration: echostat's worker count and whether HAProxy is in front."""

    workers: int
    haproxy: bool

    @property
    def name(self) -> str:
        return f"workers {self.workers} {'via HAProxy' if self.haproxy else 'direct'}"

    def server(self) -> Server:
        # servers.py's echostat config already has room for 10,000 connections from one address.
        overrides: tuple[str, ...] = (f"workers={self.workers}",)
        overrides += BEHIND_PROXY if self.haproxy else ()
        return Server(self.name, uvloop=True, overrides=overrides)


ROWS = [Row(1, False), Row(2, False), Row(1, True), Row(2, True)]
REFERENCE = ROWS[0].name
"""The row every other row is divided by."""


@dataclass(frozen=True)
class Pinning:
    """Where the server side (echostat and HAProxy) and the load generator may run."""

    key: str
    title: str
    why: str
    server_cpu: str | None
    """A taskset CPU list."""
    client_cpu: str | None


def pinnings(which: str) -> list[Pinning]:
    """The pinning modes to run: `which` is both, pinned or unpinned."""
    server_cpu, client_cpus = pin_cpus(which != "unpinned", loadgen_procs=1)
    client_cpu = client_cpus[0]
    found = []
    if which != "unpinned" and server_cpu is not None:
        found.append(
            Pinning(
                "pinned",
                f"Pinned: server side on CPU {server_cpu}, load generator on CPU {client_cpu}",
                "The server side (echostat's processes and HAProxy) shares one core, so this"
                " shows the pure overhead of a second worker or a proxy hop when no core is"
                " added; the load generator never competes with it.",
                server_cpu,
                client_cpu,
            )
        )
    if which != "pinned":
        found.append(
            Pinning(
                "unpinned",
                "Unpinned: the kernel places every process",
                "Two workers may use both cores, so this shows what a second worker can gain;"
                " the load generator competes with the server side for the same two cores.",
                None,
                None,
            )
        )
    return found


Figure = Literal[
    "round_trips_per_s", "p99_us", "mb_per_s", "bytes_per_connection", "proxy_bytes_per_connection"
]


@dataclass(frozen=True)
class Column:
    """One measurement shown in the report; `cell` is what the load generator runs."""

    label: str
    cell: Cell
    figure: Figure
    """The summary figure shown."""


CONNECT_RATE = 2000
"""New connections per second from the load generator. HAProxy opens one to echostat for each
as fast as they come; an unpaced burst of thousands overflows echostat's listen backlog, and
the kernel resets what does not fit."""


def paced(cell: Cell) -> Cell:
    """`cell`, opening its connections at `CONNECT_RATE` per second at most."""
    return dataclasses.replace(cell, extra=(*cell.extra, "--connect-rate", str(CONNECT_RATE)))


def columns(many: int) -> list[Column]:
    """The report's columns, in the order they run: idle memory first, on fresh servers."""
    hold = paced(hold_cell(many))
    found = [Column(f"idle KiB/conn x{many:,}", hold, "bytes_per_connection")]
    for count in (1, 100, many):
        cell = paced(pingpong(64, count))
        found.append(Column(f"64 B x{count:,} rt/s", cell, "round_trips_per_s"))
        found.append(Column(f"p99 µs x{count:,}", cell, "p99_us"))
    found.append(Column("stream x10 MB/s", paced(stream(10)), "mb_per_s"))
    return found


def cell_for(row: Row, cell: Cell) -> Cell:
    """`cell`, with no more connections than HAProxy can hold on a proxied row."""
    if row.haproxy and cell.connections > haproxy_capacity():
        return dataclasses.replace(cell, connections=haproxy_capacity())
    return cell


@contextmanager
def row_started(row: Row, workdir: Path, cpu: str | None) -> Iterator[Running]:
    """echostat as `row` says, with HAProxy in front if it says so, all on `cpu`."""
    with started(row.server(), workdir, cpu, certificate=None) as echostat:
        if not row.haproxy:
            yield echostat
            return
        with haproxy_started(echostat.echo_port, workdir, cpu) as (proxy_pid, port):
            yield Running(echostat.process, port, echostat.status_port, proxy_pid)


Results = dict[str, dict[str, Measurement]]
"""results[pinning][row] = that row's loadgen results per column cell key."""


def measure_all(plan: Plan, chosen: list[Pinning], cols: list[Column], workdir: Path) -> Results:
    """Every cell against every row, per pinning and repetition, on freshly started servers.

    The row order rotates per repetition so that load from elsewhere hits all rows alike.
    """
    results = {p.key: {r.name: Measurement() for r in ROWS} for p in chosen}
    cells = list({c.cell.key: c.cell for c in cols}.values())
    for rep in range(plan.reps):
        order = ROWS[rep % len(ROWS) :] + ROWS[: rep % len(ROWS)]
        for pin in chosen:
            with ExitStack() as stack:
                running = {
                    r.name: stack.enter_context(row_started(r, workdir, pin.server_cpu))
                    for r in order
                }
                for cell in cells:
                    for row in order:
                        print(
                            f"  rep {rep + 1}/{plan.reps} {pin.key} {cell.label}: {row.name}",
                            file=sys.stderr,
                        )
                        run_cell = cell_for(row, cell)
                        result = run_loadgen(run_cell, plan, running[row.name], [pin.client_cpu])
                        results[pin.key][row.name].add(cell, result)
    return results


Summaries = dict[str, dict[str, dict[str, Summary]]]
"""summaries[pinning][row][column cell key] = medians of that cell."""


def summarize_all(results: Results) -> Summaries:
    """The medians per cell (`results.summarize`), plus the connections actually opened."""
    return {
        pin: {
            row: {
                key: dataclasses.replace(summary, connections=measured.runs[key][0].connections)
                for key, summary in measured.summaries().items()
            }
            for row, measured in rows.items()
        }
        for pin, rows in results.items()
    }


def value(summary: Summary | None, figure: Figure) -> float | None:
    """One figure of a cell's summary, memory in KiB; None when it was not measured."""
    found = None if summary is None else getattr(summary, figure)
    if found is None:
        return None
    return float(found) / 1024 if figure.endswith("bytes_per_connection") else float(found)


@dataclass(frozen=True)
class ScaleInfo:
    """When and where a scale.py run measured: the report's heading, the results' ``meta``."""

    date: str
    machine: str
    haproxy: str
    elapsed_s: float
    load_before: str
    load_after: str
    pinnings: list[Pinning]
    many: int

    def to_json(self, plan: Plan) -> dict[str, Any]:
        found = dataclasses.asdict(self)
        found.pop("many")
        found["plan"] = {
            "reps": plan.reps,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "many": self.many,
            "haproxy_capacity": haproxy_capacity(),
        }
        return found


def report(
    plan: Plan,
    chosen: list[Pinning],
    cols: list[Column],
    summaries: Summaries,
    info: ScaleInfo,
) -> str:
    """The Markdown report: per pinning, the figures with their ratio to REFERENCE, and CPU use."""
    capped = [c for c in cols if c.cell.connections != cell_for(Row(1, True), c.cell).connections]
    out = [
        f"# echostat scaling benchmark ({plan.name})",
        "",
        (
            f"{info.date}; {info.machine}; {plan.reps} repetition(s) of"
            f" {plan.duration_s:g} s per cell (after {plan.warmup_s:g} s warm-up), medians;"
            f" load average {info.load_before} before, {info.load_after} after."
            f" echostat on uvloop, HAProxy {info.haproxy} (mode tcp, send-proxy-v2)."
        ),
        "",
        f"Each figure is followed by its ratio to `{REFERENCE}` in the same pinning. For"
        " round trips/s and MB/s above 1 is faster; for p99 latency and memory below 1 is"
        " cheaper. Idle KiB/conn is the growth of echostat's resident memory (supervisor plus"
        " every worker) per open idle connection; HAProxy's own growth is the next column.",
    ]
    if capped:
        out += [
            "",
            f"Through HAProxy the {capped[0].cell.connections:,}-connection cells open"
            f" {haproxy_capacity():,}: HAProxy needs two descriptors per connection and the hard"
            f" descriptor limit here is {resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,}.",
        ]
    for pin in chosen:
        out += ["", f"## {pin.title}", "", pin.why, ""]
        out += [
            _figures(cols, summaries[pin.key]),
            "",
            "Cores busy (server side / load generator):",
            "",
        ]
        out += [_cpu(cols, summaries[pin.key])]
    return "\n".join(out) + "\n"


def _figures(cols: list[Column], rows: dict[str, dict[str, Summary]]) -> str:
    hold = cols[0]
    header = ["server", hold.label, "HAProxy KiB/conn", *[c.label for c in cols[1:]]]
    body = []
    for row in ROWS:
        cells = [_with_ratio(rows, row.name, c) for c in cols]
        proxy = value(rows[row.name].get(hold.cell.key), "proxy_bytes_per_connection")
        body.append([row.name, cells[0], fmt(proxy, "us") if row.haproxy else "", *cells[1:]])
    return table(header, body)


def _with_ratio(rows: dict[str, dict[str, Summary]], name: str, col: Column) -> str:
    kind = "rate" if col.figure in ("round_trips_per_s", "mb_per_s") else "us"
    mine = value(rows[name].get(col.cell.key), col.figure)
    if name == REFERENCE:
        return fmt(mine, kind)
    reference = value(rows[REFERENCE].get(col.cell.key), col.figure)
    ratio = mine / reference if mine is not None and reference else None
    return f"{fmt(mine, kind)} ({fmt(ratio, 'ratio')})"


def _cpu(cols: list[Column], rows: dict[str, dict[str, Summary]]) -> str:
    cells = [c for c in cols if c.figure in ("round_trips_per_s", "mb_per_s")]
    body = []
    for row in ROWS:
        shown = []
        for col in cells:
            summary = rows[row.name].get(col.cell.key)
            if summary is None or summary.client_cpu is None:
                shown.append("n/a")
                continue
            server = (summary.server_cpu or 0) + (summary.proxy_cpu or 0)
            proxy = "" if summary.proxy_cpu is None else f" (HAProxy {summary.proxy_cpu:.2f})"
            shown.append(f"{server:.2f}{proxy} / {summary.client_cpu:.2f}")
        body.append([row.name, *shown])
    return table(["server", *[c.cell.label for c in cells]], body)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = plan_parser(__doc__, "one rep, short cells, 2,000 at most")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each cell")
    parser.add_argument("--many", type=int, help="the large connection count (default 10,000)")
    parser.add_argument(
        "--pinning", choices=("both", "pinned", "unpinned"), default="both", help="default both"
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = (
        Plan("scale-quick", 1, 0.5, 0.2, 0, []) if args.quick else Plan("scale", 3, 1.0, 0.3, 0, [])
    )
    plan.reps = args.reps or plan.reps
    plan.duration_s = args.duration or plan.duration_s
    plan.warmup_s = args.warmup if args.warmup is not None else plan.warmup_s
    many = args.many or (2_000 if args.quick else 10_000)
    cols = columns(many)
    chosen = pinnings(args.pinning)
    started_at = time.time()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="echostat-scale-") as tmp:
        try:
            results = measure_all(plan, chosen, cols, Path(tmp))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"scale: run failed: {exc}", file=sys.stderr)
            return 1
    summaries = summarize_all(results)
    info = ScaleInfo(
        date=date(started_at),
        machine=machine(),
        haproxy=haproxy_version(),
        elapsed_s=round(time.time() - started_at, 1),
        load_before=load_before,
        load_after=load_average(),
        pinnings=chosen,
        many=many,
    )
    markdown = report(plan, chosen, cols, summaries, info)
    document = {
        "meta": info.to_json(plan),
        "summary": {
            pin: {
                row: {key: s.to_json() for key, s in cells.items()} for row, cells in rows.items()
            }
            for pin, rows in summaries.items()
        },
        "raw": {
            pin: {row: m.to_json() for row, m in rows.items()} for pin, rows in results.items()
        },
    }
    write_results(args.out, plan.name, started_at, markdown, info.elapsed_s, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
