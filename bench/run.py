"""Benchmark echostat against the baseline echo servers, all in one run, and write the tables.

Each server in turn is started pinned to CPU 0, the load generator (`loadgen.py`) runs
pinned to CPU 1, every cell is repeated and the medians go into a Markdown table (with the
ratio of echostat to every baseline) and a JSON file under ``bench/results/``. Any echo
mismatch or failed cell stops the run with a non-zero exit.

    .venv/bin/python bench/run.py --quick      # about a minute
    .venv/bin/python bench/run.py              # the full matrix
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LOADGEN = BENCH / "loadgen.py"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Server:
    """One server under test: echostat (with a config) or a baseline script."""

    name: str
    script: str | None = None
    """Baseline file under bench/baselines/; None for echostat."""
    uvloop: bool = False
    """Baselines: pass --uvloop. echostat: config ``event_loop: uvloop`` (else asyncio)."""
    holds_many: bool = True
    """False for servers that cannot hold thousands of connections (select's 1024 limit)."""
    source: Path | None = None
    """Run echostat from this source tree (an extracted git ref) instead of the installed one."""

    @property
    def is_echostat(self) -> bool:
        return self.script is None


@dataclass(frozen=True)
class Cell:
    """One measurement: a load generator mode with its parameters."""

    key: str
    label: str
    mode: str
    connections: int
    size: int = 0
    extra: tuple[str, ...] = ()
    echostat_only: bool = False

    def loadgen_args(self) -> list[str]:
        args = [self.mode, "--connections", str(self.connections), *self.extra]
        return args + (["--size", str(self.size)] if self.size else [])


def pingpong(size: int, connections: int) -> Cell:
    label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
    return Cell(
        f"pingpong-{size}x{connections}", f"{label} x{connections}", "pingpong", connections, size
    )


def stream(connections: int) -> Cell:
    return Cell(f"stream-x{connections}", f"stream x{connections}", "stream", connections)


STATUS_CELL = Cell(
    "status-pingpong-64x100",
    "/api/stats under 64 B x100",
    "pingpong",
    100,
    64,
    ("--probe-stats",),
    echostat_only=True,
)


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


def make_plan(quick: bool, subscribers: int) -> Plan:
    if quick:
        cells = [pingpong(64, 1), pingpong(64, 100), pingpong(1024, 10), stream(10)]
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
        ]
        plan = Plan("full", 3, 2.5, 0.5, 10_000, cells)
        plan.sse_cells = [subscribers_cell(c, subscribers) for c in (pingpong(64, 100), stream(10))]
    return plan


def servers(echostat_ref: str | None, ref_tree: Path | None) -> list[Server]:
    found = [
        Server("echostat (uvloop)", uvloop=True),
        Server("echostat (asyncio)"),
    ]
    if echostat_ref is not None:
        found.append(Server(f"echostat @ {echostat_ref} (its defaults)", source=ref_tree))
    for script, title in (
        ("asyncio_protocol.py", "asyncio Protocol"),
        ("asyncio_streams.py", "asyncio streams"),
        ("tornado_loop.py", "Tornado plain loop"),
    ):
        found.append(Server(f"{title} + uvloop", script, uvloop=True))
        found.append(Server(title, script))
    found.append(Server("select.select loop", "select_loop.py", holds_many=False))
    return found


REFERENCE = "echostat (uvloop)"
"""The row whose ratio to every other row the report gives."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    echo_port: int
    status_port: int | None


def echostat_config(
    workdir: Path, echo_port: int, status_port: int, event_loop: str | None
) -> Path:
    """A config file for one run (keys as in config.yaml); no `event_loop` keeps the default."""
    path = workdir / f"echostat-{echo_port}.yaml"
    path.write_text(
        f"listeners:\n  - name: main\n    host: {HOST}\n    port: {echo_port}\n"
        f"status:\n  host: {HOST}\n  port: {status_port}\n"
        "shutdown_grace_s: 1\nlog_level: warning\n"
        + (f"event_loop: {event_loop}\n" if event_loop else "")
    )
    return path


@contextmanager
def started(server: Server, workdir: Path, cpu: int | None) -> Iterator[Running]:
    """Start `server`, wait until its ports accept, and stop it (SIGTERM, then SIGKILL) after."""
    echo_port = free_port()
    status_port = None
    env = dict(os.environ)
    cwd = None
    if server.is_echostat:
        status_port = free_port()
        event_loop = None if server.source else "uvloop" if server.uvloop else "asyncio"
        config = echostat_config(workdir, echo_port, status_port, event_loop)
        argv = [sys.executable, "-m", "server", "--config", str(config)]
        if server.source is not None:
            env["PYTHONPATH"] = str(server.source)
            cwd = server.source
    else:
        argv = [sys.executable, str(BENCH / "baselines" / server.script), "--port", str(echo_port)]  # type: ignore[operator]
        argv += ["--uvloop"] if server.uvloop else []
    log = (workdir / f"server-{echo_port}.log").open("wb")
    process = subprocess.Popen(
        pinned(cpu, argv), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
    )
    try:
        for port in (echo_port, status_port):
            if port is not None:
                wait_for_port(port, process, server.name)
        yield Running(process, echo_port, status_port)
    finally:
        stop(process)
        log.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode} before listening")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name}: port {port} not accepting after {READY_TIMEOUT_S:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def run_loadgen(cell: Cell, plan: Plan, running: Running, cpu: int | None) -> dict[str, Any]:
    """One loadgen invocation; raises if it fails (a mismatch included) or overruns."""
    argv = [
        sys.executable,
        str(LOADGEN),
        *cell.loadgen_args(),
        "--port",
        str(running.echo_port),
        "--server-pid",
        str(running.process.pid),
        "--duration",
        str(plan.duration_s),
        "--warmup",
        str(plan.warmup_s),
    ]
    if running.status_port is not None:
        argv += ["--status-port", str(running.status_port)]
    budget_s = plan.warmup_s + plan.duration_s + 60 + cell.connections / 200
    done = subprocess.run(pinned(cpu, argv), capture_output=True, timeout=budget_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{cell.label}: {done.stderr.decode().strip()}")
    return dict(json.loads(done.stdout))


def hold_cell(plan: Plan) -> Cell:
    n = plan.hold_connections
    return Cell(f"hold-{n}", f"idle KiB/conn ({n:,})", "hold", n)


def measure_all(
    plan: Plan, chosen: list[Server], workdir: Path, cpus: tuple[int | None, int | None]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """results[server][cell] = one loadgen result per repetition.

    Every repetition starts all servers afresh (idle servers cost nothing), measures idle
    memory first, then runs each cell against every server back to back, in an order that
    rotates per repetition, so that load from elsewhere on the machine hits all rows alike.
    """
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in chosen}
    server_cpu, client_cpu = cpus
    cells = [hold_cell(plan), *plan.cells, STATUS_CELL, *plan.sse_cells]
    for rep in range(plan.reps):
        shift = rep % len(chosen)
        order = chosen[shift:] + chosen[:shift]
        with ExitStack() as stack:
            running = {s.name: stack.enter_context(started(s, workdir, server_cpu)) for s in order}
            for cell in cells:
                for server in order:
                    if (cell.echostat_only and not server.is_echostat) or (
                        cell.mode == "hold" and not server.holds_many
                    ):
                        continue
                    print(
                        f"  rep {rep + 1}/{plan.reps} {cell.label}: {server.name}", file=sys.stderr
                    )
                    result = run_loadgen(cell, plan, running[server.name], client_cpu)
                    results[server.name].setdefault(cell.key, []).append(result)
    return results


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fairness(result: dict[str, Any]) -> float | None:
    """Most served connection's bytes over the least served's; None for one connection."""
    if result.get("connections", 1) < 2 or "served_min" not in result:
        return None
    return result["served_max"] / result["served_min"] if result["served_min"] else float("inf")


def cpu_cost(result: dict[str, Any]) -> float | None:
    """Server CPU µs per round trip (pingpong) or per MB echoed (stream).

    Unlike throughput, this barely moves when other work on the machine takes CPU time
    away from the server, so its ratios are the steadier comparison on a shared machine.
    """
    rate = result["round_trips_per_s"] if result["mode"] == "pingpong" else result["mb_per_s"]
    return result["server_cpu"] / rate * 1e6 if rate else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions of one cell."""
    first = runs[0]
    summary: dict[str, Any] = {"reps": len(runs)}
    if first["mode"] == "pingpong":
        summary["round_trips_per_s"] = median([r["round_trips_per_s"] for r in runs])
        summary["p50_us"] = median([r["p50_us"] for r in runs])
        summary["p99_us"] = median([r["p99_us"] for r in runs])
    if first["mode"] in ("pingpong", "stream"):
        summary["mb_per_s"] = median([r["mb_per_s"] for r in runs])
        summary["fairness"] = median([fairness(r) for r in runs])
        summary["server_cpu"] = median([r["server_cpu"] for r in runs])
        summary["client_cpu"] = median([r["client_cpu"] for r in runs])
        summary["server_cpu_us_per_unit"] = median([cpu_cost(r) for r in runs])
    if first["mode"] == "hold":
        summary["bytes_per_connection"] = median([r["bytes_per_connection"] for r in runs])
    if "status" in first:
        summary["status_p50_us"] = median([r["status"]["p50_us"] for r in runs])
        summary["status_p99_us"] = median([r["status"]["p99_us"] for r in runs])
        summary["status_requests"] = median([r["status"]["requests"] for r in runs])
    if "subscribers" in first:
        summary["subscribers"] = first["subscribers"]["count"]
        summary["subscriber_min_events"] = min(r["subscribers"]["min_events"] for r in runs)
    return summary


def headline(cell: Cell, summary: dict[str, Any] | None) -> float | None:
    """The number a cell is ranked by: round trips/s, MB/s or bytes per idle connection."""
    if summary is None:
        return None
    if cell.mode == "pingpong":
        return float(summary["round_trips_per_s"])
    if cell.mode == "stream":
        return float(summary["mb_per_s"])
    return float(summary["bytes_per_connection"]) / 1024


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


def report(
    plan: Plan,
    chosen: list[Server],
    summaries: dict[str, dict[str, dict[str, Any]]],
    meta: dict[str, Any],
) -> str:
    """The Markdown report: main table, ratios, p99, fairness, status page and subscribers."""
    hold = hold_cell(plan)
    cells = [*plan.cells, hold]
    names = [s.name for s in chosen]
    p99_key = pingpong(64, 100).key
    value = {n: {c.key: headline(c, summaries[n].get(c.key)) for c in cells} for n in names}
    p99 = {n: summaries[n].get(p99_key, {}).get("p99_us") for n in names}
    out = [
        f"# echostat benchmark ({plan.name})",
        "",
        (
            f"{meta['date']}; {meta['machine']}; server on CPU {meta['server_cpu']}, load"
            f" generator on CPU {meta['client_cpu']}; {plan.reps} repetition(s) of"
            f" {plan.duration_s:g} s per cell (after {plan.warmup_s:g} s warm-up), medians."
            " Pingpong cells in round trips/s, stream cells in MB/s echoed, idle memory in KiB"
            " of server RSS per open connection."
        ),
        "Only ratios within this one run are meaningful.",
        "",
        "## Throughput",
        "",
    ]
    has_p99 = p99_key in {c.key for c in plan.cells}
    header = ["server", *[c.label for c in cells]] + (["p99 µs 64 B x100"] if has_p99 else [])
    rows = []
    for n in names:
        row = [n, *[fmt(value[n][c.key], "mem" if c is hold else "rate") for c in cells]]
        rows.append(row + ([fmt(p99[n], "us")] if has_p99 else []))
    out += [table(header, rows), ""]
    out += [
        f"## {REFERENCE} ÷ each server",
        "",
        (
            "Throughput ratios above 1 mean echostat is faster; for p99 latency and idle"
            " memory, below 1 means echostat is better."
        ),
        "",
    ]
    rows = []
    for n in names:
        if n == REFERENCE:
            continue
        row = [n, *[fmt(_ratio(value[REFERENCE][c.key], value[n][c.key]), "ratio") for c in cells]]
        rows.append(row + ([fmt(_ratio(p99[REFERENCE], p99[n]), "ratio")] if has_p99 else []))
    out += [table(header, rows), ""]
    pp_cells = [c for c in plan.cells if c.mode == "pingpong"]
    out += ["## Latency per round trip (p50 / p99 µs)", ""]
    rows = [
        [n, *[_pair(summaries[n].get(c.key), "p50_us", "p99_us") for c in pp_cells]] for n in names
    ]
    out += [table(["server", *[c.label for c in pp_cells]], rows), ""]
    multi = [c for c in plan.cells if c.connections > 1]
    out += ["## Fairness (bytes served to the busiest connection ÷ the least served)", ""]
    rows = [
        [n, *[fmt(summaries[n].get(c.key, {}).get("fairness"), "ratio") for c in multi]]
        for n in names
    ]
    out += [table(["server", *[c.label for c in multi]], rows), ""]
    out += [
        "## Server CPU cost (µs of server CPU per round trip; per MB for stream)",
        "",
        (
            "Steadier than throughput when other work shares the machine. In brackets:"
            f" {REFERENCE} ÷ this row; below 1 means echostat spends less."
        ),
        "",
    ]
    cost = {
        n: {c.key: summaries[n].get(c.key, {}).get("server_cpu_us_per_unit") for c in plan.cells}
        for n in names
    }
    rows = [
        [n, *[_cost(cost[n][c.key], cost[REFERENCE][c.key], n == REFERENCE) for c in plan.cells]]
        for n in names
    ]
    out += [table(["server", *[c.label for c in plan.cells]], rows), ""]
    echostats = [s.name for s in chosen if s.is_echostat]
    out += [f"## Status page: GET /api/stats while {STATUS_CELL.label.split('under ')[1]} runs", ""]
    rows = []
    for n in echostats:
        s = summaries[n].get(STATUS_CELL.key, {})
        rows.append(
            [
                n,
                fmt(s.get("status_p50_us"), "us"),
                fmt(s.get("status_p99_us"), "us"),
                fmt(s.get("status_requests"), "us"),
                fmt(s.get("round_trips_per_s")),
            ]
        )
    rows += [[n, "n/a", "n/a", "n/a", "n/a"] for n in names if n not in echostats]
    out += [table(["server", "p50 µs", "p99 µs", "requests", "echo round trips/s"], rows), ""]
    out += ["## Dashboard subscribers (SSE on /api/events) during echo load", ""]
    rows = []
    for n in echostats:
        for sse in plan.sse_cells:
            base = next(c for c in plan.cells if sse.key.endswith(c.key))
            without = headline(base, summaries[n].get(base.key))
            with_sse = headline(sse, summaries[n].get(sse.key))
            events = summaries[n].get(sse.key, {}).get("subscriber_min_events")
            rows.append(
                [
                    n,
                    base.label,
                    fmt(without),
                    fmt(with_sse),
                    fmt(_ratio(with_sse, without), "ratio"),
                    fmt(events, "us"),
                ]
            )
    count = plan.sse_cells[0].extra[-1] if plan.sse_cells else "0"
    header = ["server", "cell", "0 subscribers", f"{count} subscribers", "ratio", "fewest events"]
    out += [table(header, rows), ""]
    return "\n".join(out)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _cost(value: float | None, reference: float | None, is_reference: bool) -> str:
    if value is None or is_reference:
        return fmt(value, "us")
    return f"{fmt(value, 'us')} ({fmt(_ratio(reference, value), 'ratio')})"


def _pair(summary: dict[str, Any] | None, low: str, high: str) -> str:
    if not summary:
        return "n/a"
    return f"{fmt(summary[low], 'us')} / {fmt(summary[high], 'us')}"


def extract_ref(ref: str, into: Path) -> Path:
    """The tree of git `ref` of this repository, extracted under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=True
    ).stdout
    tree = into / "echostat-ref"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def pin_cpus(requested: bool) -> tuple[int | None, int | None]:
    if requested and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        first, second = sorted(os.sched_getaffinity(0))[:2]
        return first, second
    return None, None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer cells, 1 s each, one rep")
    parser.add_argument("--reps", type=int, help="repetitions (default: 1 quick, 3 full)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only servers whose name contains NAME (repeatable)",
    )
    parser.add_argument(
        "--echostat-ref",
        metavar="GITREF",
        help="also run echostat as of this git ref (before/after in one run)",
    )
    parser.add_argument("--subscribers", type=int, default=50, help="SSE subscribers (default 50)")
    parser.add_argument("--no-pin", action="store_true", help="don't pin with taskset")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.quick, args.subscribers)
    plan.reps = args.reps or plan.reps
    plan.duration_s = args.duration or plan.duration_s
    cpus = pin_cpus(not args.no_pin)
    started_at = time.time()
    with tempfile.TemporaryDirectory(prefix="echostat-bench-") as tmp:
        workdir = Path(tmp)
        tree = extract_ref(args.echostat_ref, workdir) if args.echostat_ref else None
        chosen = [
            s
            for s in servers(args.echostat_ref, tree)
            if not args.only or s.name == REFERENCE or any(o in s.name for o in args.only)
        ]
        try:
            results = measure_all(plan, chosen, workdir, cpus)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"bench: run failed: {exc}", file=sys.stderr)
            return 1
    summaries = {n: {k: summarize(v) for k, v in cells.items()} for n, cells in results.items()}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_at))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started_at)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "server_cpu": cpus[0] if cpus[0] is not None else "any",
        "client_cpu": cpus[1] if cpus[1] is not None else "any",
        "elapsed_s": round(time.time() - started_at, 1),
        "plan": {
            "name": plan.name,
            "reps": plan.reps,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "hold_connections": plan.hold_connections,
        },
        "echostat_ref": args.echostat_ref,
    }
    markdown = report(plan, chosen, summaries, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    md_path = args.out / f"{stamp}-{plan.name}.md"
    md_path.write_text(markdown + f"\nFinished in {meta['elapsed_s']:g} s.\n")
    json_path = md_path.with_suffix(".json")
    document = {"meta": meta, "summary": summaries, "raw": results}
    json_path.write_text(json.dumps(_finite(document), indent=1))
    print(markdown)
    print(f"wrote {md_path} and {json_path} in {meta['elapsed_s']:g} s", file=sys.stderr)
    return 0


def _finite(value: Any) -> Any:
    """`value` with infinite floats (a starved connection's fairness) as the string "inf"."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return value


if __name__ == "__main__":
    sys.exit(main())
