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
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import (
    BENCH,
    HOST,
    READY_TIMEOUT_S,
    Cell,
    Plan,
    Running,
    Server,
    finite,
    fmt,
    hold_cell,
    load_average,
    median,
    pin_cpus,
    pingpong,
    pinned,
    run_loadgen,
    started,
    stop,
    stream,
    summarize,
    table,
)

HAPROXY_CONFIG = """\
global
    maxconn {maxconn}
defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 20s
    retries 5
    timeout client 120s
    timeout server 120s
frontend echo
    bind fd@{frontend_fd}
    default_backend echostat
backend echostat
    server echostat {host}:{port} send-proxy-v2
"""

HAPROXY_FIXED_FDS = 20
"""Descriptors HAProxy needs beside two per connection (2.6 asks for 17 more)."""

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
        # run.py's config already has room for 10,000 connections from one address.
        overrides = (f"workers={self.workers}",)
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


@dataclass(frozen=True)
class Column:
    """One measurement shown in the report; `cell` is what the load generator runs."""

    key: str
    label: str
    cell: Cell
    figure: str
    """The summary key shown: round_trips_per_s, p99_us, mb_per_s or bytes_per_connection."""


CONNECT_RATE = 2000
"""New connections per second from the load generator. HAProxy opens one to echostat for each
as fast as they come; an unpaced burst of thousands overflows echostat's listen backlog, and
the kernel resets what does not fit."""


def paced(cell: Cell) -> Cell:
    """`cell`, opening its connections at `CONNECT_RATE` per second at most."""
    return dataclasses.replace(cell, extra=(*cell.extra, "--connect-rate", str(CONNECT_RATE)))


def columns(many: int) -> list[Column]:
    """The report's columns, in the order they run: idle memory first, on fresh servers."""
    hold = paced(hold_cell(Plan("scale", 1, 0, 0, many, [])))
    found = [Column("hold", f"idle KiB/conn x{many:,}", hold, "bytes_per_connection")]
    for count in (1, 100, many):
        cell = paced(pingpong(64, count))
        found.append(Column(f"rt-{count}", f"64 B x{count:,} rt/s", cell, "round_trips_per_s"))
        found.append(Column(f"p99-{count}", f"p99 µs x{count:,}", cell, "p99_us"))
    found.append(Column("stream-10", "stream x10 MB/s", paced(stream(10)), "mb_per_s"))
    return found


def haproxy_capacity() -> int:
    """Connections HAProxy can proxy under this process's hard descriptor limit (inherited)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return sys.maxsize if hard == resource.RLIM_INFINITY else (hard - HAPROXY_FIXED_FDS) // 2


def cell_for(row: Row, cell: Cell) -> Cell:
    """`cell`, with no more connections than HAProxy can hold on a proxied row."""
    if row.haproxy and cell.connections > haproxy_capacity():
        return dataclasses.replace(cell, connections=haproxy_capacity())
    return cell


@contextmanager
def haproxy_started(backend_port: int, workdir: Path, cpu: str | None) -> Iterator[tuple[int, int]]:
    """Debian's HAProxy in the foreground in front of `backend_port`; yields (PID, its port).

    Its frontend socket is bound here (port 0) and handed over as ``fd@N``; this returns once
    one message has come back through it, and stops HAProxy (SIGTERM, then SIGKILL) after.
    """
    program = haproxy_program()
    if program is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    frontend = socket.socket()
    frontend.bind((HOST, 0))
    frontend.listen(4096)
    maxconn = min(haproxy_capacity(), 20_000)
    config = workdir / f"haproxy-{backend_port}.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            maxconn=maxconn, frontend_fd=frontend.fileno(), host=HOST, port=backend_port
        )
    )
    log = (workdir / f"haproxy-{backend_port}.log").open("wb")
    process = subprocess.Popen(
        pinned(cpu, [program, "-db", "-f", str(config)]),
        pass_fds=(frontend.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    port = int(frontend.getsockname()[1])
    try:
        wait_for_echo(port, process)
        yield process.pid, port
    finally:
        stop(process)
        log.close()
        frontend.close()


def wait_for_echo(port: int, process: subprocess.Popen[bytes]) -> None:
    """Return once `port` echoes a message; raise if `process` exits or time runs out."""
    probe = b"ready?"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with status {process.returncode} at start")
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(probe)
                echoed = b""
                while len(echoed) < len(probe) and (data := sock.recv(64)):
                    echoed += data
            if echoed == probe:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"haproxy on port {port}: no echo within {READY_TIMEOUT_S:g} s")


@contextmanager
def row_started(row: Row, workdir: Path, cpu: str | None) -> Iterator[Running]:
    """echostat as `row` says, with HAProxy in front if it says so, all on `cpu`."""
    with started(row.server(), workdir, cpu, certificate=None) as echostat:
        if not row.haproxy:
            yield echostat
            return
        with haproxy_started(echostat.echo_port, workdir, cpu) as (proxy_pid, port):
            yield Running(echostat.process, port, echostat.status_port, proxy_pid)


Results = dict[str, dict[str, dict[str, list[dict[str, Any]]]]]
"""results[pinning][row][column cell key] = one loadgen result per repetition."""


def measure_all(plan: Plan, chosen: list[Pinning], cols: list[Column], workdir: Path) -> Results:
    """Every cell against every row, per pinning and repetition, on freshly started servers.

    The row order rotates per repetition so that load from elsewhere hits all rows alike.
    """
    results: Results = {p.key: {r.name: {} for r in ROWS} for p in chosen}
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
                        results[pin.key][row.name].setdefault(cell.key, []).append(result)
    return results


Summaries = dict[str, dict[str, dict[str, dict[str, Any]]]]
"""summaries[pinning][row][column cell key] = medians of that cell."""


def summarize_all(results: Results) -> Summaries:
    """run.py's medians per cell, plus HAProxy's share and the connections actually used."""
    summaries: Summaries = {}
    for pin, rows in results.items():
        summaries[pin] = {}
        for row, cells in rows.items():
            summaries[pin][row] = {}
            for key, runs in cells.items():
                summary = summarize(runs)
                summary["connections"] = runs[0]["connections"]
                for extra in ("proxy_cpu", "proxy_bytes_per_connection"):
                    if extra in runs[0]:
                        summary[extra] = median([r[extra] for r in runs])
                summaries[pin][row][key] = summary
    return summaries


def value(summary: dict[str, Any] | None, figure: str) -> float | None:
    """One figure of a cell's summary, memory in KiB; None when it was not measured."""
    if summary is None or summary.get(figure) is None:
        return None
    found = float(summary[figure])
    return found / 1024 if figure.endswith("bytes_per_connection") else found


def report(
    plan: Plan,
    chosen: list[Pinning],
    cols: list[Column],
    summaries: Summaries,
    meta: dict[str, Any],
) -> str:
    """The Markdown report: per pinning, the figures with their ratio to REFERENCE, and CPU use."""
    capped = [c for c in cols if c.cell.connections != cell_for(Row(1, True), c.cell).connections]
    out = [
        f"# echostat scaling benchmark ({plan.name})",
        "",
        (
            f"{meta['date']}; {meta['machine']}; {plan.reps} repetition(s) of"
            f" {plan.duration_s:g} s per cell (after {plan.warmup_s:g} s warm-up), medians;"
            f" load average {meta['load_before']} before, {meta['load_after']} after."
            f" echostat on uvloop, HAProxy {meta['haproxy']} (mode tcp, send-proxy-v2)."
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


def _figures(cols: list[Column], rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    hold = cols[0]
    header = ["server", hold.label, "HAProxy KiB/conn", *[c.label for c in cols[1:]]]
    body = []
    for row in ROWS:
        cells = [_with_ratio(rows, row.name, c, c.figure) for c in cols]
        proxy = value(rows[row.name].get(hold.cell.key), "proxy_bytes_per_connection")
        body.append([row.name, cells[0], fmt(proxy, "us") if row.haproxy else "", *cells[1:]])
    return table(header, body)


def _with_ratio(
    rows: dict[str, dict[str, dict[str, Any]]], name: str, col: Column, figure: str
) -> str:
    kind = "rate" if figure in ("round_trips_per_s", "mb_per_s") else "us"
    mine = value(rows[name].get(col.cell.key), figure)
    if name == REFERENCE:
        return fmt(mine, kind)
    reference = value(rows[REFERENCE].get(col.cell.key), figure)
    ratio = mine / reference if mine is not None and reference else None
    return f"{fmt(mine, kind)} ({fmt(ratio, 'ratio')})"


def _cpu(cols: list[Column], rows: dict[str, dict[str, dict[str, Any]]]) -> str:
    cells = [c for c in cols if c.figure in ("round_trips_per_s", "mb_per_s")]
    body = []
    for row in ROWS:
        shown = []
        for col in cells:
            summary = rows[row.name].get(col.cell.key) or {}
            server = (summary.get("server_cpu") or 0) + (summary.get("proxy_cpu") or 0)
            proxy = f" (HAProxy {summary['proxy_cpu']:.2f})" if "proxy_cpu" in summary else ""
            client = summary.get("client_cpu")
            shown.append(f"{server:.2f}{proxy} / {client:.2f}" if client is not None else "n/a")
        body.append([row.name, *shown])
    return table(["server", *[c.cell.label for c in cells]], body)


def haproxy_program() -> str | None:
    """Debian installs HAProxy in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def haproxy_version() -> str:
    program = haproxy_program()
    if program is None:
        return "missing"
    done = subprocess.run([program, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return done.stdout.split()[2] if done.returncode == 0 else "unknown"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one rep, short cells, 2,000 at most")
    parser.add_argument("--reps", type=int, help="repetitions (default: 1 quick, 3 full)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
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
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(started_at)),
        "machine": (
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        ),
        "haproxy": haproxy_version(),
        "elapsed_s": round(time.time() - started_at, 1),
        "load_before": load_before,
        "load_after": load_average(),
        "pinnings": [dataclasses.asdict(p) for p in chosen],
        "plan": {
            "reps": plan.reps,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "many": many,
            "haproxy_capacity": haproxy_capacity(),
        },
    }
    markdown = report(plan, chosen, cols, summaries, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started_at))
    md_path = args.out / f"{stamp}-{plan.name}.md"
    md_path.write_text(markdown + f"\nFinished in {meta['elapsed_s']:g} s.\n")
    json_path = md_path.with_suffix(".json")
    json_path.write_text(
        json.dumps(finite({"meta": meta, "summary": summaries, "raw": results}), indent=1)
    )
    print(markdown)
    print(f"wrote {md_path} and {json_path} in {meta['elapsed_s']:g} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
