"""Benchmark echostat against the baseline echo servers, all in one run, and write the tables.

The servers run pinned to CPU 0 and the load generator (`loadgen.py`) pinned to CPU 1
(with ``--loadgen-procs N``: N load generators on the last N CPUs, the server on the rest);
every cell is repeated, and the medians go into a Markdown report (with the ratio of
echostat to every baseline and to the C epoll floor) and a JSON file under
``bench/results/``. Any echo mismatch or failed cell stops the run with a non-zero exit.

    .venv/bin/python bench/run.py --quick      # about a minute
    .venv/bin/python bench/run.py              # the full matrix
"""

from __future__ import annotations

import argparse
import dataclasses
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
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from source_tree import import_root, server_module

from echostat.probe.figures import percentile

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
    overrides: tuple[str, ...] = ()
    """echostat: ``KEY=VALUE`` settings passed as ``--set`` on top of the config file."""
    binary: Path | None = None
    """A compiled baseline (the C epoll echo), run directly."""
    tls: bool = False
    """Serves TLS too (echostat's TLS listener, or a baseline with echostat's SSLContext)."""

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
    mode = "churn-half-close" if half_close else "churn"
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

    def every_cell(self) -> list[Cell]:
        """All cells in the order they run: idle memory first, on fresh servers."""
        hold = [hold_cell(self)] if self.hold_connections else []
        return [*hold, *self.cells, *self.extra_cells, *self.sse_cells]

    def keep_only(self, patterns: Sequence[str]) -> None:
        """Drop every cell whose label contains none of `patterns`."""

        def wanted(cell: Cell) -> bool:
            return any(p in cell.label for p in patterns)

        self.cells = [c for c in self.cells if wanted(c)]
        self.sse_cells = [c for c in self.sse_cells if wanted(c)]
        self.extra_cells = [c for c in self.extra_cells if wanted(c)]
        if not wanted(hold_cell(self)):
            self.hold_connections = 0


def make_plan(quick: bool, subscribers: int) -> Plan:
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


def servers(echostat_ref: str | None, ref_tree: Path | None, floor: Path | None) -> list[Server]:
    found = [
        Server("echostat (uvloop)", uvloop=True, tls=True),
        Server("echostat (asyncio)", tls=True),
        Server("echostat (uvloop, path quality off)", uvloop=True, overrides=OFF),
        Server("echostat (uvloop, access log)", uvloop=True, overrides=ACCESS_LOG),
    ]
    if echostat_ref is not None:
        found.append(Server(f"echostat @ {echostat_ref} (its defaults)", source=ref_tree))
    for script, title in (
        ("asyncio_protocol.py", "asyncio Protocol"),
        ("asyncio_streams.py", "asyncio streams"),
        ("tornado_loop.py", "Tornado plain loop"),
    ):
        tls = script == "asyncio_protocol.py"
        found.append(Server(f"{title} + uvloop", script, uvloop=True, tls=tls))
        found.append(Server(title, script, tls=tls))
    found.append(Server("select.select loop", "select_loop.py", holds_many=False))
    if floor is not None:
        found.append(Server(FLOOR, "epoll_echo.c", binary=floor))
    return found


OFF = ("path_quality=false",)
ACCESS_LOG = ("access_log.enabled=true", "access_log.format=json", "access_log.path=/dev/null")
"""The access log written in full (JSON, one write per line), to a sink that costs no disk."""

REFERENCE = "echostat (uvloop)"
"""The row whose ratio to every other row the report gives."""

FLOOR = "C epoll echo"
"""The floor: a bare epoll loop in C (`baselines/epoll_echo.c`), what the machine itself costs."""


def build_floor(workdir: Path, notes: list[str]) -> Path | None:
    """Compile the C epoll echo baseline with `cc`; None (and a note why) if it can't be."""
    compiler = shutil.which("cc")
    if compiler is None:
        notes.append(f"{FLOOR} skipped: no C compiler (cc) on this machine.")
        return None
    binary = workdir / "epoll_echo"
    source = BENCH / "baselines" / "epoll_echo.c"
    built = subprocess.run(
        [compiler, "-O2", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        notes.append(f"{FLOOR} skipped: cc failed: {built.stderr.strip()[:200]}")
        return None
    return binary


def make_certificate(workdir: Path, notes: list[str]) -> tuple[Path, Path] | None:
    """A throwaway RSA-2048 certificate and key for the TLS cells (openssl); None without it."""
    openssl = shutil.which("openssl")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    if openssl is not None:
        request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        names = ["-subj", f"/CN={HOST}", "-keyout", str(key), "-out", str(cert)]
        made = subprocess.run([openssl, *request, *names], capture_output=True, check=False)
        if made.returncode == 0:
            return cert, key
    notes.append("TLS cells skipped: openssl could not make a certificate.")
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    """`argv` run on the CPUs of the taskset list `cpus` ("0", "0-5"), or unpinned."""
    return argv if cpus is None else ["taskset", "-c", cpus, *argv]


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    echo_port: int
    status_port: int | None
    proxy_pid: int | None = None
    """A proxy between the load generator and the server, measured apart."""
    tls_port: int | None = None


BENCH_LIMITS = "limits:\n  max_connections: 12000\n  max_connections_per_ip: 0\n"
"""Room for the 10,000-connection cell, all of whose clients share one address."""


def echostat_config(
    workdir: Path,
    echo_port: int,
    status_port: int,
    event_loop: str | None,
    tls: tuple[int, Path, Path] | None = None,
) -> Path:
    """A config file for one run (keys as in config.yaml); no `event_loop` means an older
    echostat (an extracted git ref) with its own defaults, which may predate `limits`.
    `tls` adds a TLS listener: its port, certificate and key."""
    path = workdir / f"echostat-{echo_port}.yaml"
    listeners = f"listeners:\n  - name: main\n    host: {HOST}\n    port: {echo_port}\n"
    if tls is not None:
        port, cert, key = tls
        listeners += (
            f"  - name: tls\n    host: {HOST}\n    port: {port}\n"
            f"    tls: {{cert: {cert}, key: {key}}}\n"
        )
    path.write_text(
        listeners + f"status:\n  host: {HOST}\n  port: {status_port}\n"
        "shutdown_grace_s: 1\nlog_level: warning\n"
        + (f"event_loop: {event_loop}\n{BENCH_LIMITS}" if event_loop else "")
    )
    return path


@contextmanager
def started(
    server: Server, workdir: Path, cpus: str | None, certificate: tuple[Path, Path] | None
) -> Iterator[Running]:
    """Start `server`, wait until its ports accept, and stop it (SIGTERM, then SIGKILL) after."""
    echo_port = free_port()
    status_port = None
    tls_port = free_port() if server.tls and certificate else None
    tls = (tls_port, *certificate) if tls_port and certificate else None
    env = dict(os.environ)
    cwd = None
    if server.is_echostat:
        status_port = free_port()
        event_loop = None if server.source else "uvloop" if server.uvloop else "asyncio"
        config = echostat_config(workdir, echo_port, status_port, event_loop, tls)
        module = "echostat"
        if server.source is not None:
            module = server_module(server.source)
            links = workdir / f"import-root-{echo_port}"
            env["PYTHONPATH"] = str(import_root(server.source, links))
            cwd = server.source
        argv = [sys.executable, "-m", module, "--config", str(config)]
        argv += [arg for setting in server.overrides for arg in ("--set", setting)]
    elif server.binary is not None:
        argv = [str(server.binary), "--port", str(echo_port)]
    else:
        argv = [sys.executable, str(BENCH / "baselines" / server.script), "--port", str(echo_port)]  # type: ignore[operator]
        argv += ["--uvloop"] if server.uvloop else []
        if tls is not None:
            # The same SSLContext echostat builds, from a config naming the same files.
            config = echostat_config(workdir, echo_port, free_port(), "asyncio", tls)
            argv += ["--tls-port", str(tls_port), "--tls-config", str(config)]
    log = (workdir / f"server-{echo_port}.log").open("wb")
    process = subprocess.Popen(
        pinned(cpus, argv), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
    )
    try:
        for port in (echo_port, status_port, tls_port):
            if port is not None:
                wait_for_port(port, process, server.name)
        yield Running(process, echo_port, status_port, tls_port=tls_port)
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


def run_loadgen(
    cell: Cell, plan: Plan, running: Running, cpus: Sequence[str | None]
) -> dict[str, Any]:
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
    results = []
    for process in launched:
        stdout, stderr = process.communicate(timeout=budget_s)
        if process.returncode != 0:
            raise RuntimeError(f"{cell.label}: {stderr.decode().strip()}")
        results.append(dict(json.loads(stdout)))
    return results[0] if procs == 1 else merge(results)


RATES = ("round_trips_per_s", "mb_per_s", "connections_per_s", "client_cpu")
"""Figures that add up across load generators; the server's CPU use is measured by each."""


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from those of several load generators that ran at the same time."""
    merged = dict(results[0])
    for key in RATES:
        if key in merged:
            merged[key] = round(sum(r[key] for r in results), 3)
    for key in ("server_cpu", "proxy_cpu"):
        if merged.get(key) is not None:
            merged[key] = round(statistics.mean(r[key] for r in results), 3)
    merged["connections"] = sum(r["connections"] for r in results)
    merged["loadgen_procs"] = len(results)
    if "served_min" in merged:
        merged["served_min"] = min(r["served_min"] for r in results)
        merged["served_max"] = max(r["served_max"] for r in results)
    if "failures" in merged:
        failures: Counter[str] = Counter()
        for r in results:
            failures.update(r["failures"])
        merged["failures"] = dict(failures)
    if "latencies_us" in merged:
        latencies = sorted(v for r in results for v in r.pop("latencies_us"))
        merged.pop("latencies_us")
        merged["p50_us"] = percentile(latencies, 0.50)
        merged["p99_us"] = percentile(latencies, 0.99)
    return merged


HOLD_CONNECT_RATE = 5000
"""New connections per second in the hold cell: a burst of 10,000 at once overflows the
listen queue of servers with a small backlog, which measures the backlog, not memory."""


def hold_cell(plan: Plan) -> Cell:
    n = plan.hold_connections
    pacing = ("--connect-rate", str(HOLD_CONNECT_RATE))
    return Cell(f"hold-{n}", f"idle KiB/conn ({n:,})", "hold", n, extra=pacing)


def measure_all(
    plan: Plan,
    chosen: list[Server],
    workdir: Path,
    cpus: tuple[str | None, list[str | None]],
    certificate: tuple[Path, Path] | None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """results[server][cell] = one loadgen result per repetition.

    Every repetition starts all servers afresh (idle servers cost nothing), measures idle
    memory first, then runs each cell against every server back to back, in an order that
    rotates per repetition, so that load from elsewhere on the machine hits all rows alike.
    """
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in chosen}
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
                    result = run_loadgen(cell, plan, running[server.name], client_cpus)
                    results[server.name].setdefault(cell.key, []).append(result)
    return results


def runs_on(cell: Cell, server: Server) -> bool:
    """Whether `cell` measures `server` at all (status cells need echostat, TLS needs TLS)."""
    if cell.echostat_only and not server.is_echostat:
        return False
    if cell.mode == "hold" and not server.holds_many:
        return False
    return server.tls or not cell.tls


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fairness(result: dict[str, Any]) -> float | None:
    """Most served connection's bytes over the least served's; None for one connection."""
    if result.get("connections", 1) < 2 or "served_min" not in result:
        return None
    return result["served_max"] / result["served_min"] if result["served_min"] else float("inf")


def cpu_cost(result: dict[str, Any]) -> float | None:
    """Server CPU µs per round trip (pingpong), per connection (churn) or per MB (stream).

    Unlike throughput, this barely moves when other work on the machine takes CPU time
    away from the server, so its ratios are the steadier comparison on a shared machine.
    """
    rate = result[RATE_KEYS.get(result["mode"], "mb_per_s")]
    return result["server_cpu"] / rate * 1e6 if rate else None


RATE_KEYS = {
    "pingpong": "round_trips_per_s",
    "churn": "connections_per_s",
    "churn-half-close": "connections_per_s",
}
"""The throughput figure of each load generator mode; stream's is ``mb_per_s``."""


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions of one cell."""
    first = runs[0]
    summary: dict[str, Any] = {"reps": len(runs)}
    if first["mode"] in ("pingpong", "churn", "churn-half-close"):
        rate = RATE_KEYS[first["mode"]]
        summary[rate] = median([r[rate] for r in runs])
        summary["p50_us"] = median([r["p50_us"] for r in runs])
        summary["p99_us"] = median([r["p99_us"] for r in runs])
    if "failures" in first:
        summary["failures"] = sum(sum(r["failures"].values()) for r in runs)
    if first["mode"] != "hold":
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
    if cell.mode in RATE_KEYS:
        return float(summary[RATE_KEYS[cell.mode]])
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


Summaries = dict[str, dict[str, dict[str, Any]]]
"""summaries[server name][cell key] = medians of that cell."""


def report(plan: Plan, chosen: list[Server], summaries: Summaries, meta: dict[str, Any]) -> str:
    """The Markdown report: one section per aspect, each a table with a row per server."""
    names = [s.name for s in chosen]
    echostats = [s.name for s in chosen if s.is_echostat]
    out = [
        f"# echostat benchmark ({plan.name})",
        "",
        (
            f"{meta['date']}; {meta['machine']}; server on CPU {meta['server_cpu']},"
            f" {meta.get('loadgen_procs', 1)} load generator(s) on CPU {meta['client_cpu']};"
            f" {plan.reps} repetition(s) of"
            f" {plan.duration_s:g} s per cell (after {plan.warmup_s:g} s warm-up), medians;"
            f" load average {meta['load_before']} before, {meta['load_after']} after."
        ),
        "Only ratios within this one run are meaningful.",
        *meta.get("notes", []),
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
            {n: [_pair(summaries[n].get(c.key)) for c in pp_cells] for n in names},
        )
    multi = [c for c in plan.cells if c.connections > 1 and not c.churns]
    if multi:
        out += _section(
            "Fairness (bytes served to the busiest connection ÷ the least served)",
            "1.00x is perfectly even; ∞ means some connection got nothing.",
            multi,
            {n: [fmt(_get(summaries, n, c, "fairness"), "ratio") for c in multi] for n in names},
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
            {n: [_busy(summaries[n].get(c.key)) for c in plan.cells] for n in names},
        )
    if plan.extra_cells:
        out += _status_page(names, echostats, summaries)
    if plan.sse_cells:
        out += _subscribers(plan, echostats, summaries)
    return "\n".join(out)


def _section(title: str, note: str, cells: Sequence[Cell], rows: dict[str, list[str]]) -> list[str]:
    header = ["server", *[c.label for c in cells]]
    body = table(header, [[name, *row] for name, row in rows.items()])
    return [f"## {title}", "", *([note, ""] if note else []), body, ""]


def _get(summaries: Summaries, name: str, cell: Cell, key: str) -> Any:
    return summaries[name].get(cell.key, {}).get(key)


def _throughput(plan: Plan, names: list[str], summaries: Summaries) -> list[str]:
    """Headline numbers per cell (plus idle memory and p99 at 64 B x100), then the ratios."""
    hold = hold_cell(plan)
    cells = [*plan.cells, hold] if plan.hold_connections else list(plan.cells)
    p99_cell = pingpong(64, 100)
    if p99_cell.key in {c.key for c in plan.cells}:
        cells.append(Cell("p99", "p99 µs 64 B x100", "p99", 100))

    def value(name: str, cell: Cell) -> float | None:
        if cell.mode == "p99":
            return _get(summaries, name, p99_cell, "p99_us")  # type: ignore[no-any-return]
        return headline(cell, summaries[name].get(cell.key))

    values = {n: {c.key: value(n, c) for c in cells} for n in names}
    kinds = {c.key: "rate" if c.mode in (*RATE_KEYS, "stream") else "us" for c in cells}
    out = _section(
        "Throughput",
        "Pingpong cells in round trips/s, churn and TLS handshake cells in connections/s"
        " (each verified), stream cells in MB/s echoed (10^6 bytes/s), idle memory in KiB of"
        " server RSS per open connection, p99 in µs.",
        cells,
        {n: [fmt(values[n][c.key], kinds[c.key]) for c in cells] for n in names},
    )
    reference = values[REFERENCE]
    ratios = {
        n: [fmt(_ratio(reference[c.key], values[n][c.key]), "ratio") for c in cells]
        for n in names
        if n != REFERENCE
    }
    return out + _section(
        f"{REFERENCE} ÷ each server",
        "Throughput ratios above 1 mean echostat is faster; for idle memory and p99 latency,"
        " below 1 means echostat is better.",
        cells,
        ratios,
    )


def _cpu_cost(plan: Plan, names: list[str], summaries: Summaries) -> list[str]:
    cost = {n: [_get(summaries, n, c, "server_cpu_us_per_unit") for c in plan.cells] for n in names}
    reference = cost[REFERENCE]
    rows = {
        n: [
            fmt(mine, "us")
            if n == REFERENCE
            else f"{fmt(mine, 'us')} ({fmt(_ratio(ref, mine), 'ratio')})"
            for mine, ref in zip(cost[n], reference, strict=True)
        ]
        for n in names
    }
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
    floor = [_get(summaries, FLOOR, c, "server_cpu_us_per_unit") for c in cells]
    rows = {
        n: [
            fmt(_ratio(_get(summaries, n, c, "server_cpu_us_per_unit"), f), "ratio")
            for c, f in zip(cells, floor, strict=True)
        ]
        for n in names
        if n != FLOOR
    }
    return _section(
        f"Server CPU cost ÷ {FLOOR} (per round trip, per connection, per MB)",
        "How far each server is from the machine itself: 1.00x would be as cheap as a bare"
        " epoll loop in C, whose cost is nearly all kernel (TCP, loopback, system calls).",
        cells,
        rows,
    )


def _status_page(names: list[str], echostats: list[str], summaries: Summaries) -> list[str]:
    """GET /api/stats latency and echo during the status cells, for each echostat."""
    rows = []
    keys = ("status_p50_us", "status_p99_us", "status_requests", "server_cpu_us_per_unit")
    for n in echostats:
        for cell in (STATUS_CELL, PAGE_WITH_10K_CELL):
            s = summaries[n].get(cell.key)
            if s is not None:
                figures = [fmt(s.get(k), "us") for k in keys]
                rows.append([n, cell.label, *figures, fmt(s.get("round_trips_per_s"))])
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
            events = _get(summaries, n, sse, "subscriber_min_events")
            ratio = fmt(_ratio(with_sse, without), "ratio")
            rows.append([n, base.label, fmt(without), fmt(with_sse), ratio, fmt(events, "us")])
    count = plan.sse_cells[0].extra[-1]
    header = ["server", "cell", "0 subscribers", f"{count} subscribers", "ratio", "fewest events"]
    title = "## Dashboard subscribers (SSE on /api/events) during echo load"
    return [title, "", table(header, rows), ""]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _busy(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "n/a"
    return f"{summary['server_cpu']:.2f} / {summary['client_cpu']:.2f}"


def _pair(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "n/a"
    return f"{fmt(summary['p50_us'], 'us')} / {fmt(summary['p99_us'], 'us')}"


def extract_ref(ref: str, into: Path) -> Path:
    """The tree of git `ref` of this repository, extracted under `into`."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref], capture_output=True, check=True
    ).stdout
    tree = into / "echostat-ref"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    return tree


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews throughput."""
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def pin_cpus(requested: bool, loadgen_procs: int) -> tuple[str | None, list[str | None]]:
    """The server's CPUs (a taskset list) and one CPU per load generator: the load generators
    get the last `loadgen_procs` CPUs, the server (and its workers) all the others."""
    available = sorted(os.sched_getaffinity(0))
    if not requested or not shutil.which("taskset") or len(available) < 2:
        return None, [None] * loadgen_procs
    if len(available) <= loadgen_procs:
        raise SystemExit(
            f"bench: --loadgen-procs {loadgen_procs} needs at least {loadgen_procs + 1} CPUs"
            f" (one or more for the server), this machine offers {len(available)}"
        )
    server = ",".join(str(cpu) for cpu in available[: len(available) - loadgen_procs])
    if loadgen_procs == 1:
        server = str(available[0])  # the classic layout: CPU 0 and CPU 1, the rest idle
        return server, [str(available[1])]
    return server, [str(cpu) for cpu in available[-loadgen_procs:]]


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
        "--cells",
        action="append",
        default=[],
        metavar="LABEL",
        help="run only cells whose label contains LABEL, e.g. 'stream' (repeatable)",
    )
    parser.add_argument(
        "--echostat-ref",
        metavar="GITREF",
        help="also run echostat as of this git ref (before/after in one run)",
    )
    parser.add_argument("--subscribers", type=int, default=50, help="SSE subscribers (default 50)")
    parser.add_argument("--no-pin", action="store_true", help="don't pin with taskset")
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=1,
        metavar="N",
        help="drive each cell with N load generator processes, each pinned to one of the last"
        " N CPUs, results merged (default 1: server on CPU 0, load generator on CPU 1)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an echostat setting for every echostat row, e.g. --set workers=4 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args.quick, args.subscribers)
    plan.reps = args.reps or plan.reps
    plan.duration_s = args.duration or plan.duration_s
    if args.cells:
        plan.keep_only(args.cells)
    if args.loadgen_procs < 1:
        print("bench: --loadgen-procs must be 1 or more", file=sys.stderr)
        return 2
    cpus = pin_cpus(not args.no_pin, args.loadgen_procs)
    started_at = time.time()
    load_before = load_average()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="echostat-bench-") as tmp:
        workdir = Path(tmp)
        tree = extract_ref(args.echostat_ref, workdir) if args.echostat_ref else None
        floor = build_floor(workdir, notes)
        certificate = make_certificate(workdir, notes) if any(c.tls for c in plan.cells) else None
        chosen = [
            dataclasses.replace(s, overrides=(*s.overrides, *args.set)) if s.is_echostat else s
            for s in servers(args.echostat_ref, tree, floor)
            if not args.only or s.name == REFERENCE or any(o in s.name for o in args.only)
        ]
        try:
            results = measure_all(plan, chosen, workdir, cpus, certificate)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"bench: run failed: {exc}", file=sys.stderr)
            return 1
    summaries = {n: {k: summarize(v) for k, v in cells.items()} for n, cells in results.items()}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_at))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started_at)),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "server_cpu": cpus[0] if cpus[0] is not None else "any",
        "client_cpu": ",".join(c for c in cpus[1] if c is not None) or "any",
        "loadgen_procs": args.loadgen_procs,
        "echostat_settings": args.set,
        "notes": notes,
        "elapsed_s": round(time.time() - started_at, 1),
        "load_before": load_before,
        "load_after": load_average(),
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
    json_path.write_text(json.dumps(finite(document), indent=1))
    print(markdown)
    print(f"wrote {md_path} and {json_path} in {meta['elapsed_s']:g} s", file=sys.stderr)
    return 0


def finite(value: Any) -> Any:
    """`value` with infinite floats (a starved connection's fairness) as the string "inf"."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return value


if __name__ == "__main__":
    sys.exit(main())
