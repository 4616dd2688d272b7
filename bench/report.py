"""The report: Markdown tables of the medians (a row per server, a column per cell, ratios to
the reference and to the C floor) and the results files under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from busy import BUSY_CORES
from plan import PAGE_WITH_10K_CELL, STATUS_CELL, Cell, Plan, pingpong
from results import COUNTED, Summary, headline
from servers import FLOOR, REFERENCE, Server

Summaries = dict[str, dict[str, Summary]]
"""summaries[server name][cell key] = medians of that cell."""


@dataclass(frozen=True)
class ReportRow:
    """One row of a report table: a server and what each column shows for it."""

    server: str
    figures: list[str]


@dataclass(frozen=True)
class RunInfo:
    """When, where and how a run.py run measured: the report's heading, the results' ``meta``."""

    date: str
    machine: str
    server_cpu: str
    client_cpu: str
    loadgen_procs: int
    echostat_settings: list[str]
    notes: list[str]
    elapsed_s: float
    load_before: str
    load_after: str
    echostat_ref: str | None

    def to_json(self, plan: Plan) -> dict[str, Any]:
        found = {k: v for k, v in vars(self).items() if k != "echostat_ref"}
        found["plan"] = {
            "name": plan.name,
            "reps": plan.reps,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "hold_connections": plan.hold_connections,
        }
        return found | {"echostat_ref": self.echostat_ref}


def fmt(value: float | None, kind: str = "rate") -> str:
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "∞"
    if kind == "rate" and value >= 10_000:
        return f"{value / 1000:,.1f}k"
    if kind == "ratio":
        return f"{value:.2f}x"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(plan: Plan, chosen: list[Server], summaries: Summaries, info: RunInfo) -> str:
    """The Markdown report: one section per aspect, each a table with a row per server."""
    names = [s.name for s in chosen]
    echostats = [s.name for s in chosen if s.is_echostat]
    out = [
        f"# echostat benchmark ({plan.name})",
        "",
        (
            f"{info.date}; {info.machine}; server on CPU {info.server_cpu},"
            f" {info.loadgen_procs} load generator(s) on CPU {info.client_cpu};"
            f" {plan.reps} repetition(s) of"
            f" {plan.duration_s:g} s per cell (after {plan.warmup_s:g} s warm-up), medians;"
            f" load average {info.load_before} before, {info.load_after} after."
        ),
        "Only ratios within this one run are meaningful.",
        f"A figure marked * was measured while processes outside the benchmark kept more"
        f" than {BUSY_CORES:g} of a core busy, in at least one repetition, even after"
        f' {plan.busy_retries} retries (see "Other work on the machine").',
        *info.notes,
        "",
    ]
    out += _throughput(plan, names, summaries)
    pp_cells = [c for c in plan.cells if c.mode == "pingpong" or c.churns]
    if pp_cells:
        out += _section(
            "Latency (p50 / p99 µs)",
            "Pingpong: one round trip. Churn and TLS handshakes: from starting to connect to"
            " the verified echo (half-close: to the server's EOF after it).",
            pp_cells,
            [ReportRow(n, [_pair(summaries[n].get(c.key)) for c in pp_cells]) for n in names],
        )
    multi = [c for c in plan.cells if c.connections > 1 and not c.churns]
    if multi:
        out += _section(
            "Fairness (bytes served to the busiest connection ÷ the least served)",
            "1.00x is perfectly even; ∞ means some connection got nothing.",
            multi,
            [
                ReportRow(n, [fmt(_fairness(summaries, n, c), "ratio") for c in multi])
                for n in names
            ],
        )
    if plan.cells:
        out += _cpu_cost(plan, names, summaries)
        if FLOOR in names:
            out += _floor(plan, names, summaries)
        out += _section(
            "CPU busy: server / load generator",
            "Fraction of one core each side used while measuring. A load generator near 1.00"
            " with the server below it means that cell's throughput is the load generator's"
            " limit, not the server's: compare such servers by their CPU cost above.",
            plan.cells,
            [ReportRow(n, [_busy(summaries[n].get(c.key)) for c in plan.cells]) for n in names],
        )
        out += _section(
            "Other work on the machine",
            "Cores that processes outside the benchmark kept busy while each cell ran (the"
            " busiest repetition, after retries), and how many repetitions were busy.",
            plan.cells,
            [ReportRow(n, [_others(summaries[n].get(c.key)) for c in plan.cells]) for n in names],
        )
    if plan.extra_cells:
        out += _status_page(echostats, summaries)
    if plan.sse_cells:
        out += _subscribers(plan, echostats, summaries)
    return "\n".join(out)


def _section(title: str, note: str, cells: Sequence[Cell], rows: list[ReportRow]) -> list[str]:
    header = ["server", *[c.label for c in cells]]
    body = table(header, [[row.server, *row.figures] for row in rows])
    return [f"## {title}", "", *([note, ""] if note else []), body, ""]


def _fairness(summaries: Summaries, name: str, cell: Cell) -> float | None:
    summary = summaries[name].get(cell.key)
    return None if summary is None else summary.fairness


def _cpu_per_unit(summaries: Summaries, name: str, cell: Cell) -> float | None:
    summary = summaries[name].get(cell.key)
    return None if summary is None else summary.server_cpu_us_per_unit


def _throughput(plan: Plan, names: list[str], summaries: Summaries) -> list[str]:
    """Headline numbers per cell (plus idle memory and p99 at 64 B x100), then the ratios."""
    cells = [*plan.cells, plan.hold] if plan.hold_connections else list(plan.cells)
    p99_cell = pingpong(64, 100)
    if p99_cell.key in {c.key for c in plan.cells}:
        cells.append(Cell("p99", "p99 µs 64 B x100", "p99", 100))

    def value(name: str, cell: Cell) -> float | None:
        if cell.mode == "p99":
            summary = summaries[name].get(p99_cell.key)
            return None if summary is None else summary.p99_us
        return headline(cell, summaries[name].get(cell.key))

    def summary(name: str, cell: Cell) -> Summary | None:
        return summaries[name].get(p99_cell.key if cell.mode == "p99" else cell.key)

    values = {n: {c.key: value(n, c) for c in cells} for n in names}
    kinds = {c.key: "rate" if c.mode in (*COUNTED, "stream") else "us" for c in cells}
    out = _section(
        "Throughput",
        "Pingpong cells in round trips/s, churn and TLS handshake cells in connections/s"
        " (each verified), stream cells in MB/s echoed (10^6 bytes/s), idle memory in KiB of"
        " server RSS per open connection, p99 in µs.",
        cells,
        [
            ReportRow(
                n, [fmt(values[n][c.key], kinds[c.key]) + _mark(summary(n, c)) for c in cells]
            )
            for n in names
        ],
    )
    reference = values[REFERENCE]
    ratios = [
        ReportRow(n, [fmt(_ratio(reference[c.key], values[n][c.key]), "ratio") for c in cells])
        for n in names
        if n != REFERENCE
    ]
    return out + _section(
        f"{REFERENCE} ÷ each server",
        "Throughput ratios above 1 mean echostat is faster; for idle memory and p99 latency,"
        " below 1 means echostat is better.",
        cells,
        ratios,
    )


def _cpu_cost(plan: Plan, names: list[str], summaries: Summaries) -> list[str]:
    cost = {n: [_cpu_per_unit(summaries, n, c) for c in plan.cells] for n in names}
    reference = cost[REFERENCE]
    rows = [
        ReportRow(
            n,
            [
                (
                    fmt(mine, "us")
                    if n == REFERENCE
                    else f"{fmt(mine, 'us')} ({fmt(_ratio(ref, mine), 'ratio')})"
                )
                + _mark(summaries[n].get(c.key))
                for mine, ref, c in zip(cost[n], reference, plan.cells, strict=True)
            ],
        )
        for n in names
    ]
    return _section(
        "Server CPU cost (µs of server CPU per round trip; per connection for churn and TLS"
        " handshakes; per MB for stream)",
        "Steadier than throughput when other work shares the machine. In brackets:"
        f" {REFERENCE} ÷ this row; below 1 means echostat spends less.",
        plan.cells,
        rows,
    )


def _floor(plan: Plan, names: list[str], summaries: Summaries) -> list[str]:
    """Each server's CPU cost per unit of work as a multiple of the C epoll echo's."""
    cells = [c for c in plan.cells if not c.tls]
    floor = [_cpu_per_unit(summaries, FLOOR, c) for c in cells]
    rows = [
        ReportRow(
            n,
            [
                fmt(_ratio(_cpu_per_unit(summaries, n, c), f), "ratio")
                for c, f in zip(cells, floor, strict=True)
            ],
        )
        for n in names
        if n != FLOOR
    ]
    return _section(
        f"Server CPU cost ÷ {FLOOR} (per round trip, per connection, per MB)",
        "How far each server is from the machine itself: 1.00x would be as cheap as a bare"
        " epoll loop in C, whose cost is nearly all kernel (TCP, loopback, system calls).",
        cells,
        rows,
    )


def _status_page(echostats: list[str], summaries: Summaries) -> list[str]:
    """GET /api/stats latency and echo during the status cells, for each echostat."""
    rows = []
    for n in echostats:
        for cell in (STATUS_CELL, PAGE_WITH_10K_CELL):
            s = summaries[n].get(cell.key)
            if s is not None:
                figures = [s.status_p50_us, s.status_p99_us, s.status_requests]
                figures.append(s.server_cpu_us_per_unit)
                shown = [fmt(f, "us") for f in figures]
                rows.append([n, cell.label, *shown, fmt(s.round_trips_per_s)])
    header = ["server", "cell", "p50 µs", "p99 µs", "requests", "server CPU µs/rt", "round trips/s"]
    title = "## Status page: GET /api/stats every 10 ms during echo load"
    return [title, "", table(header, rows), ""]


def _subscribers(plan: Plan, echostats: list[str], summaries: Summaries) -> list[str]:
    rows = []
    for n in echostats:
        for sse in plan.sse_cells:
            base = next((c for c in plan.cells if sse.key.endswith(c.key)), sse)
            without = headline(base, summaries[n].get(base.key))
            with_sse = headline(sse, summaries[n].get(sse.key))
            summary = summaries[n].get(sse.key)
            events = None if summary is None else summary.subscriber_min_events
            ratio = fmt(_ratio(with_sse, without), "ratio")
            rows.append([n, base.label, fmt(without), fmt(with_sse), ratio, fmt(events, "us")])
    count = plan.sse_cells[0].extra[-1]
    header = ["server", "cell", "0 subscribers", f"{count} subscribers", "ratio", "fewest events"]
    title = "## Dashboard subscribers (SSE on /api/events) during echo load"
    return [title, "", table(header, rows), ""]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _busy(summary: Summary | None) -> str:
    if not summary or summary.server_cpu is None or summary.client_cpu is None:
        return "n/a"
    return f"{summary.server_cpu:.2f} / {summary.client_cpu:.2f}"


def _mark(summary: Summary | None) -> str:
    """`` *`` after a figure some repetition of which ran on a busy machine."""
    return " *" if summary is not None and summary.busy_reps else ""


def _others(summary: Summary | None) -> str:
    if summary is None or summary.other_cores is None:
        return "n/a"
    return f"{summary.other_cores:.2f} ({summary.busy_reps}/{summary.reps} busy)"


def _pair(summary: Summary | None) -> str:
    if not summary:
        return "n/a"
    return f"{fmt(summary.p50_us, 'us')} / {fmt(summary.p99_us, 'us')}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews throughput."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    """The machine at hand, for a report's heading: architecture, CPUs, Python."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def date(started_at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(started_at))


def write_results(
    out: Path, name: str, started_at: float, markdown: str, elapsed_s: float, document: Any
) -> None:
    """Write `markdown` and the JSON `document` to ``out/<date>-<name>.{md,json}`` and print
    the report (stdout) and where it went (stderr)."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_at))
    md_path = out / f"{stamp}-{name}.md"
    md_path.write_text(markdown + f"\nFinished in {elapsed_s:g} s.\n")
    json_path = md_path.with_suffix(".json")
    json_path.write_text(json.dumps(finite(document), indent=1))
    print(markdown)
    print(f"wrote {md_path} and {json_path} in {elapsed_s:g} s", file=sys.stderr)


def finite(value: Any) -> Any:
    """`value` with infinite floats (a starved connection's fairness) as the string "inf"."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return value
