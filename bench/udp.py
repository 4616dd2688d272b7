"""UDP echo benchmark: echostat's UDP listener against an asyncio DatagramProtocol on uvloop.

Both servers run pinned to CPU 0 and a closed-loop client in C (`udp_load.c`: a window of
datagrams in flight on one socket, every echo checked, batched with sendmmsg/recvmmsg so the
client is never the bottleneck) pinned to CPU 1; the servers alternate within each
repetition, so load from elsewhere on the machine hits both alike. echostat runs with its
counters and every rate limit on, set high enough not to bind. Prints a Markdown table:
datagrams per second, the ratio to the baseline, and server CPU microseconds per datagram.

    .venv/bin/python bench/udp.py --quick      # about 20 s
    .venv/bin/python bench/udp.py              # 5 repetitions
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import BENCH, HOST, free_port, pin_cpus, pinned, stop, wait_until

SIZES = (64, 1400)
WINDOW = 32
"""Datagrams in flight: enough to keep the server busy, few enough never to overflow a buffer."""

BASELINE = "asyncio DatagramProtocol + uvloop"
ECHOSTAT = "echostat UDP (uvloop, limits on)"
LIMITS_ON = (
    "udp.max_datagrams_per_s_per_ip=10000000",
    "udp.max_datagrams_per_s=100000000",
    "udp.max_bytes_per_s=100000000000",
)
"""Every bound enabled, all far above what one client reaches."""


def echostat_argv(workdir: Path, port: int) -> list[str]:
    config = workdir / "echostat-udp.yaml"
    config.write_text(
        f"listeners:\n  - {{name: udp, host: {HOST}, port: {port}, protocol: udp}}\n"
        f"status: {{host: {HOST}, port: {free_port()}}}\nlog_level: warning\n"
    )
    argv = [sys.executable, "-m", "echostat", "--config", str(config)]
    return argv + [arg for setting in LIMITS_ON for arg in ("--set", setting)]


@contextmanager
def started(
    name: str, workdir: Path, cpu: str | None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start server `name` on a free UDP port, wait until it echoes, stop it afterwards;
    yields the process and its port."""
    port = free_port()
    if name == ECHOSTAT:
        argv = echostat_argv(workdir, port)
    else:
        script = BENCH / "baselines" / "asyncio_datagram.py"
        argv = [sys.executable, str(script), "--port", str(port), "--uvloop"]
    process = subprocess.Popen(pinned(cpu, argv), stdout=subprocess.DEVNULL)
    try:
        wait_for_echo(port, process, name)
        yield process, port
    finally:
        stop(process)


def wait_for_echo(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    """Return once `port` echoes a datagram; raise if `process` exits or time runs out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)

        def echoes() -> bool:
            sock.sendto(b"ready?", (HOST, port))
            try:
                sock.recv(100)
            except (TimeoutError, ConnectionRefusedError):
                return False
            return True

        wait_until(echoes, process, name, f"echoing on UDP port {port}")


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LOAD_SOURCE = BENCH / "udp_load.c"
"""The load generator, compiled at the start of each run."""


def build_load(workdir: Path) -> Path:
    """Compile `LOAD_SOURCE` with the system's C compiler; the binary's path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("bench/udp.py needs a C compiler (apt-get install gcc)")
    binary = workdir / "udp_load"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(LOAD_SOURCE)], check=True)
    return binary


def measure(
    load: Path, port: int, pid: int, size: int, duration_s: float, cpu: str | None
) -> tuple[float, float]:
    """(datagrams per second, server CPU µs per datagram) for one run of the client."""
    argv = [str(load), str(port), str(size), str(WINDOW), str(duration_s)]
    cpu_before, started_at = cpu_seconds(pid), time.monotonic()
    done = subprocess.run(pinned(cpu, argv), capture_output=True, text=True, timeout=60, check=True)
    elapsed_s, cpu_used = time.monotonic() - started_at, cpu_seconds(pid) - cpu_before
    echoed, lost = map(int, done.stdout.split())
    if lost > echoed // 100:
        raise RuntimeError(f"{lost} datagrams lost of {echoed + lost}")
    return echoed / elapsed_s, cpu_used / echoed * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 1.5 s")
    parser.add_argument("--no-pin", action="store_true", help="don't pin to CPUs 0 and 1")
    args = parser.parse_args()
    reps, duration_s = (2, 1.5) if args.quick else (5, 3.0)
    server_cpu, (client_cpu,) = pin_cpus(not args.no_pin, loadgen_procs=1)
    names = [ECHOSTAT, BASELINE]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        load = build_load(Path(tmp))
        for rep in range(reps):
            order = names[rep % 2 :] + names[: rep % 2]
            for name in order:
                with started(name, Path(tmp), server_cpu) as (server, port):
                    for size in SIZES:
                        print(f"  rep {rep + 1}/{reps} {size} B: {name}", file=sys.stderr)
                        result = measure(load, port, server.pid, size, duration_s, client_cpu)
                        results.setdefault((name, size), []).append(result)
    print("| server | size | datagrams/s | vs baseline | server CPU µs/datagram |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        base = statistics.median(r[0] for r in results[(BASELINE, size)])
        for name in names:
            rate = statistics.median(r[0] for r in results[(name, size)])
            cost = statistics.median(r[1] for r in results[(name, size)])
            print(f"| {name} | {size} B | {rate:,.0f} | {rate / base:.2f}x | {cost:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
