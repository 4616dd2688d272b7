"""Load generator for TCP echo servers: pingpong, stream, hold and churn, every byte verified.

Runs the verifying clients of `probe.engine` (the engine of `echostat probe`) on uvloop, so
that the client costs as little as possible per byte. Payloads are slices of a seeded random
pattern at offsets that differ per connection and per round trip, so a server that mixes up
connections, reorders, drops or repeats bytes is caught; any mismatch (or a run that cannot
finish in its deadline) exits non-zero. Percentiles are nearest-rank (`probe.figures`).
The result is one JSON object on stdout; `bench/run.py` drives this script.

    python bench/loadgen.py pingpong --port 7007 --size 64 --connections 100 --duration 3
    python bench/loadgen.py stream --port 7007 --connections 10 --duration 3
    python bench/loadgen.py hold --port 7007 --connections 10000 --server-pid 1234
    python bench/loadgen.py churn --port 7007 --size 16 --connections 32 --duration 3
    python bench/loadgen.py churn-half-close --port 7007 --size 16 --connections 32 --tls
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import uvloop

from echostat.probe.churn import Churn
from echostat.probe.engine import Client, Holder, Mismatch, PingPong, Run, Stream
from echostat.probe.figures import percentile
from echostat.probe.pattern import SPAN
from echostat.probe.session import SETTLE_S, Endpoint, Session, bounded
from echostat.probe.tls import client_context

LATENCY_SAMPLES = 20_000
"""At most this many latencies go out with --emit-latencies (evenly spaced in sorted order)."""


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, so that a server with worker processes counts whole."""
    tree = [pid]
    for parent in tree:
        for task in os.listdir(f"/proc/{parent}/task"):
            with open(f"/proc/{parent}/task/{task}/children") as children:
                tree += [int(child) for child in children.read().split()]
    return tree


class CpuMeter:
    """CPU seconds used by this process and, if known, by the server (with its children) and
    by a proxy in front of it, between start and stop."""

    def __init__(self, server_pid: int | None, proxy_pid: int | None = None) -> None:
        self.pids = {"server_cpu": server_pid, "proxy_cpu": proxy_pid}
        self._marks: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks = {"time": time.monotonic(), "client_cpu": usage.ru_utime + usage.ru_stime}
        marks |= {key: cpu_seconds(pid) for key, pid in self.pids.items() if pid is not None}
        return marks

    def start(self) -> None:
        self._marks = self._now()

    def stop(self) -> dict[str, float | None]:
        end = self._now()
        elapsed = end.pop("time") - self._marks["time"]
        usage: dict[str, float | None] = {"server_cpu": None}
        usage |= {key: round((end[key] - self._marks[key]) / elapsed, 3) for key in end}
        return usage


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of `pid` and its descendants (those alive now)."""
    total = 0
    for member in process_tree(pid):
        with open(f"/proc/{member}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its descendants, summed from /proc/PID/status (VmRSS)."""
    total = 0
    for member in process_tree(pid):
        with open(f"/proc/{member}/status") as status:
            rss = [line.split()[1] for line in status if line.startswith("VmRSS:")]
        if not rss:
            raise RuntimeError(f"/proc/{member}/status has no VmRSS line")
        total += int(rss[0]) * 1024
    return total


class StatusProbe:
    """Times ``GET /api/stats`` on a keep-alive connection every `interval_s` while measuring."""

    def __init__(self, host: str, port: int, interval_s: float) -> None:
        self.host = host
        self.port = port
        self.interval_s = interval_s
        self.latencies_ns: list[int] = []

    async def probe(self, run: Run, deadline: float) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        request = f"GET /api/stats HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()
        try:
            while run.running and time.monotonic() < deadline:
                started = time.perf_counter_ns()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = _content_length(head)
                body = await reader.readexactly(length)
                elapsed = time.perf_counter_ns() - started
                if not head.startswith(b"HTTP/1.1 200") or "bytes" not in json.loads(body):
                    raise Mismatch(f"/api/stats answered {head.splitlines()[0]!r}")
                if run.measuring:
                    self.latencies_ns.append(elapsed)
                await asyncio.sleep(self.interval_s)
        finally:
            writer.close()


class Subscribers:
    """`count` dashboard subscribers on ``/api/events`` (SSE), each reading every event."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.host = host
        self.port = port
        self.count = count
        self.events = [0] * count
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, run: Run) -> None:
        """Subscribe all, returning once every subscriber has received its first event."""
        first = [asyncio.get_running_loop().create_future() for _ in range(self.count)]
        self._tasks = [asyncio.create_task(self._read(i, first[i])) for i in range(self.count)]
        await bounded("subscribing to /api/events", asyncio.gather(*first), run, SETTLE_S)

    async def _read(self, index: int, first: asyncio.Future[None]) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writers.append(writer)
        writer.write(f"GET /api/events HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise Mismatch(f"/api/events answered {head.splitlines()[0]!r}")
        while line := await reader.readline():
            if line.startswith(b"data: "):
                self.events[index] += 1
                if not first.done():
                    first.set_result(None)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise Mismatch("response without Content-Length")


def endpoint(args: argparse.Namespace) -> Endpoint:
    """The server under test; with --tls, any certificate is accepted (it is our own)."""
    tls = client_context(None, insecure=True) if args.tls else None
    return Endpoint(args.host, args.port, tls=tls)


def latency_figures(latencies_ns: list[int], emit: bool) -> dict[str, Any]:
    """p50 and p99 in µs; with `emit`, also a sorted sample of the latencies for merging."""
    latencies = sorted(latencies_ns)
    figures: dict[str, Any] = {
        "p50_us": round(percentile(latencies, 0.50) / 1000, 1),
        "p99_us": round(percentile(latencies, 0.99) / 1000, 1),
    }
    if emit:
        step = max(1, len(latencies) // LATENCY_SAMPLES)
        figures["latencies_us"] = [round(ns / 1000, 1) for ns in latencies[::step]]
    return figures


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the mode named by `args.mode` and return its figures."""
    if args.mode.startswith("churn"):
        return await churn(args)
    run = Run()
    session = Session(endpoint(args), run)
    if args.mode == "hold":
        return await hold(args, session)
    factory: Callable[[int], Client]
    if args.mode == "pingpong":
        factory = functools.partial(PingPong, run, size=args.size)
    else:
        factory = functools.partial(Stream, run, window=args.window, chunk=args.chunk)
    idle = Session(session.endpoint, run)
    if args.idle:  # open (and keep open) idle connections first, as a busy server has
        await idle.connect(args.idle, lambda i: Holder(run, i, 16), rate=args.connect_rate)
        await idle.first_echoes()
    await session.connect(args.connections, factory, rate=args.connect_rate)
    subscribers = None
    if args.subscribers:
        subscribers = Subscribers(args.host, args.status_port, args.subscribers)
        await subscribers.start(run)
    probe_task = None
    probe = None
    deadline = time.monotonic() + args.warmup + args.duration + SETTLE_S
    if args.probe_stats:
        probe = StatusProbe(args.host, args.status_port, args.probe_interval)
        probe_task = asyncio.create_task(probe.probe(run, deadline))
    session.start()
    await session.first_echoes()
    cpu = CpuMeter(args.server_pid, args.proxy_pid)
    await bounded("warming up", asyncio.sleep(args.warmup), run, args.warmup + SETTLE_S)
    run.measuring = True
    cpu.start()
    started = time.perf_counter()
    await bounded("measuring", asyncio.sleep(args.duration), run, args.duration + SETTLE_S)
    elapsed = time.perf_counter() - started
    run.measuring = False
    usage = cpu.stop()
    await session.stop()
    if probe_task is not None:
        await bounded("status probe", probe_task, run, SETTLE_S)
    if subscribers is not None:
        subscribers.stop()
    session.close()
    idle.close()
    served = session.served()
    result: dict[str, Any] = {
        "mode": args.mode,
        "connections": args.connections,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(sum(served) / elapsed / 1e6, 2),
        "served_min": min(served),
        "served_max": max(served),
        **usage,
    }
    if args.mode == "pingpong":
        result.update(
            size=args.size,
            round_trips_per_s=round(len(run.latencies_ns) / elapsed),
            **latency_figures(run.latencies_ns, args.emit_latencies),
        )
    else:
        result.update(window=args.window)
    if probe is not None:
        probes = sorted(probe.latencies_ns)
        if not probes:
            raise Mismatch("the status probe completed no request while measuring")
        result["status"] = {
            "requests": len(probes),
            "p50_us": round(percentile(probes, 0.50) / 1000, 1),
            "p99_us": round(percentile(probes, 0.99) / 1000, 1),
        }
    if subscribers is not None:
        result["subscribers"] = {"count": subscribers.count, "min_events": min(subscribers.events)}
    return result


async def churn(args: argparse.Namespace) -> dict[str, Any]:
    """`args.connections` lanes of connect, echo `args.size` bytes, close; connections/s,
    connect-to-verified-echo latency and failures (refused, reset) by reason."""
    run = Run(stop_on_failure=False)
    lanes = Churn(endpoint(args), run, args.connections, args.size, args.mode != "churn")
    await lanes.start()
    cpu = CpuMeter(args.server_pid, args.proxy_pid)
    await asyncio.sleep(args.warmup)
    run.measuring = True
    cpu.start()
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    elapsed = time.perf_counter() - started
    run.measuring = False
    usage = cpu.stop()
    await lanes.stop()
    mismatches = [f for f in run.failures if f.reason == "mismatch"]
    if mismatches:
        raise Mismatch(mismatches[0].message)
    if not lanes.completed:
        raise Mismatch(f"no connection completed its echo; failures: {dict(lanes.failures)}")
    return {
        "mode": args.mode,
        "connections": args.connections,
        "size": args.size,
        "tls": args.tls,
        "seconds": round(elapsed, 3),
        "connections_per_s": round(lanes.completed / elapsed),
        "failures": dict(lanes.failures),
        **latency_figures(lanes.latencies_ns, args.emit_latencies),
        **usage,
    }


async def hold(args: argparse.Namespace, session: Session) -> dict[str, Any]:
    """Open `args.connections` idle connections; report the server's RSS growth per connection."""
    run = session.run
    before = rss_bytes(args.server_pid)
    proxy_before = rss_bytes(args.proxy_pid) if args.proxy_pid else 0
    await session.connect(args.connections, lambda i: Holder(run, i, 16), rate=args.connect_rate)
    await session.first_echoes()
    await bounded("settling", asyncio.sleep(args.settle), run, args.settle + SETTLE_S)
    after = rss_bytes(args.server_pid)
    proxy_after = rss_bytes(args.proxy_pid) if args.proxy_pid else 0
    run.running = False
    session.close()
    await bounded("closing", asyncio.gather(*(c.closed for c in session.clients)), run, SETTLE_S)
    result = {
        "mode": "hold",
        "connections": args.connections,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_connection": round((after - before) / args.connections),
    }
    if args.proxy_pid:
        result |= {
            "proxy_rss_before_bytes": proxy_before,
            "proxy_rss_after_bytes": proxy_after,
            "proxy_bytes_per_connection": round((proxy_after - proxy_before) / args.connections),
        }
    return result


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE towards `wanted` (up to the hard limit), for thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        raise SystemExit(f"loadgen: need {wanted} file descriptors, hard limit is {hard}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("pingpong", "stream", "hold", "churn", "churn-half-close"))
    parser.add_argument("--host", default="127.0.0.1", help="echo server address (loopback only)")
    parser.add_argument("--port", type=int, required=True, help="echo server port")
    parser.add_argument(
        "--connections", type=int, default=1, help="connections (churn: lanes at once)"
    )
    parser.add_argument(
        "--connect-rate", type=float, default=0, help="new connections per second (0: no cap)"
    )
    parser.add_argument("--size", type=int, default=64, help="pingpong and churn message bytes")
    parser.add_argument("--window", type=int, default=256 * 1024, help="stream bytes in flight")
    parser.add_argument("--chunk", type=int, default=64 * 1024, help="stream bytes per write")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    parser.add_argument("--settle", type=float, default=0.5, help="hold: seconds before RSS")
    parser.add_argument(
        "--server-pid", type=int, help="for hold (RSS) and server CPU use; children count too"
    )
    parser.add_argument("--proxy-pid", type=int, help="a proxy in front: its RSS and CPU apart")
    parser.add_argument("--status-port", type=int, help="echostat status port")
    parser.add_argument("--probe-stats", action="store_true", help="time GET /api/stats")
    parser.add_argument("--probe-interval", type=float, default=0.01)
    parser.add_argument("--subscribers", type=int, default=0, help="SSE clients on /api/events")
    parser.add_argument("--idle", type=int, default=0, help="idle connections held meanwhile")
    parser.add_argument("--tls", action="store_true", help="speak TLS (certificate not checked)")
    parser.add_argument(
        "--emit-latencies",
        action="store_true",
        help="include a sorted sample of latencies (µs), so that runs can be merged",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.size <= SPAN or not 1 <= args.chunk <= SPAN:
        parser.error(f"--size and --chunk must be 1..{SPAN}")
    if args.mode == "hold" and args.server_pid is None:
        parser.error("hold needs --server-pid to read the server's RSS")
    if (args.probe_stats or args.subscribers) and args.status_port is None:
        parser.error("--probe-stats and --subscribers need --status-port")
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600] seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(args.connections + args.subscribers + args.idle + 64)
    try:
        result = uvloop.run(measure(args))
    except (Mismatch, TimeoutError, OSError) as exc:
        print(f"loadgen: {args.mode} failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
