"""Running cells: load generator processes against started servers, their results merged,
and every cell against every server, repetition after repetition."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from busy import watched
from plan import Cell, Plan
from results import CellResult, Summary, summarize
from servers import BENCH, Running, Server, pinned, started

from echostat.probe.figures import percentile

LOADGEN = BENCH / "loadgen.py"


def run_loadgen(cell: Cell, plan: Plan, running: Running, cpus: Sequence[str | None]) -> CellResult:
    """One loadgen process per entry of `cpus`, pinned there, sharing the cell's connections,
    all at once; their results merged. Raises if one fails (a mismatch included) or overruns.

    The hold cell always uses one process: it reads the server's memory before and after
    its own connections, which others opening theirs at the same time would blur.
    """
    procs = 1 if cell.mode == "hold" else min(len(cpus), cell.connections)
    shares = [cell.connections // procs + (i < cell.connections % procs) for i in range(procs)]
    port = running.tls_port if cell.tls else running.echo_port
    argv = [
        sys.executable,
        str(LOADGEN),
        "--port",
        str(port),
        "--server-pid",
        str(running.process.pid),
        "--duration",
        str(plan.duration_s),
        "--warmup",
        str(plan.warmup_s),
    ]
    if running.status_port is not None:
        argv += ["--status-port", str(running.status_port)]
    if running.proxy_pid is not None:
        argv += ["--proxy-pid", str(running.proxy_pid)]
    argv += ["--emit-latencies"] if procs > 1 else []
    budget_s = plan.warmup_s + plan.duration_s + 60 + cell.connections / 200
    launched = [
        subprocess.Popen(
            pinned(cpu, [*argv, *cell.loadgen_args(share)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for cpu, share in zip(cpus, shares, strict=False)
    ]
    documents = []
    for process in launched:
        stdout, stderr = process.communicate(timeout=budget_s)
        if process.returncode != 0:
            raise RuntimeError(f"{cell.label}: {stderr.decode().strip()}")
        documents.append(dict(json.loads(stdout)))
    return CellResult.from_json(documents[0] if procs == 1 else merge(documents))


RATES = ("round_trips_per_s", "mb_per_s", "connections_per_s", "client_cpu")
"""Figures that add up across load generators; the server's CPU use is measured by each."""


def merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """One loadgen JSON object from those of several load generators that ran at once."""
    merged = dict(documents[0])
    for key in RATES:
        if key in merged:
            merged[key] = round(sum(r[key] for r in documents), 3)
    for key in ("server_cpu", "proxy_cpu"):
        if merged.get(key) is not None:
            merged[key] = round(statistics.mean(r[key] for r in documents), 3)
    merged["connections"] = sum(r["connections"] for r in documents)
    merged["loadgen_procs"] = len(documents)
    if "served_min" in merged:
        merged["served_min"] = min(r["served_min"] for r in documents)
        merged["served_max"] = max(r["served_max"] for r in documents)
    if "failures" in merged:
        failures: Counter[str] = Counter()
        for r in documents:
            failures.update(r["failures"])
        merged["failures"] = dict(failures)
    if "latencies_us" in merged:
        latencies = sorted(v for r in documents for v in r.pop("latencies_us"))
        merged.pop("latencies_us")
        merged["p50_us"] = percentile(latencies, 0.50)
        merged["p99_us"] = percentile(latencies, 0.99)
    return merged


@dataclass
class Measurement:
    """What one server yielded: per cell key, one result per repetition."""

    runs: dict[str, list[CellResult]] = field(default_factory=dict)

    def add(self, cell: Cell, result: CellResult) -> None:
        self.runs.setdefault(cell.key, []).append(result)

    def summaries(self) -> dict[str, Summary]:
        """Medians per cell key."""
        return {key: summarize(runs) for key, runs in self.runs.items()}

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """The load generators' own JSON objects, per cell key (the results file's ``raw``)."""
        return {key: [r.document for r in runs] for key, runs in self.runs.items()}


def run_quietly(cell: Cell, plan: Plan, running: Running, cpus: Sequence[str | None]) -> CellResult:
    """`run_loadgen`, rerun up to `plan.busy_retries` times while other processes keep the
    machine busy: the quietest run, with the machine's load during it in its document
    (``load_average``, ``other_cores``)."""
    quietest: tuple[CellResult, float, float] | None = None
    for _ in range(plan.busy_retries + 1):
        result, load = watched(lambda: run_loadgen(cell, plan, running, cpus))
        if load is None:
            return result
        if quietest is None or load.other_cores < quietest[2]:
            quietest = (result, load.load_average, load.other_cores)
        if not load.busy:
            break
        print(f"    busy: other processes used {load.other_cores:.2f} cores", file=sys.stderr)
    assert quietest is not None
    result, load_average, other_cores = quietest
    document = result.document | {"load_average": load_average, "other_cores": other_cores}
    return CellResult.from_json(document)


def measure_all(
    plan: Plan,
    chosen: list[Server],
    workdir: Path,
    cpus: tuple[str | None, list[str | None]],
    certificate: tuple[Path, Path] | None,
) -> dict[str, Measurement]:
    """One measurement per server name in `chosen`, in that order.

    Every repetition starts all servers afresh (idle servers cost nothing), measures idle
    memory first, then runs each cell against every server back to back, in an order that
    rotates per repetition, so that load from elsewhere on the machine hits all rows alike.
    A cell run while other processes kept the machine busy is rerun (`run_quietly`).
    """
    measured = {s.name: Measurement() for s in chosen}
    server_cpus, client_cpus = cpus
    cells = [c for c in plan.every_cell() if certificate or not c.tls]
    for rep in range(plan.reps):
        shift = rep % len(chosen)
        order = chosen[shift:] + chosen[:shift]
        with ExitStack() as stack:
            running = {
                s.name: stack.enter_context(started(s, workdir, server_cpus, certificate))
                for s in order
            }
            for cell in cells:
                for server in order:
                    if not runs_on(cell, server):
                        continue
                    print(
                        f"  rep {rep + 1}/{plan.reps} {cell.label}: {server.name}", file=sys.stderr
                    )
                    result = run_quietly(cell, plan, running[server.name], client_cpus)
                    measured[server.name].add(cell, result)
    return measured


def runs_on(cell: Cell, server: Server) -> bool:
    """Whether `cell` measures `server` at all (status cells need echostat, TLS needs TLS)."""
    if cell.echostat_only and not server.is_echostat:
        return False
    if cell.mode == "hold" and not server.holds_many:
        return False
    return server.tls or not cell.tls
