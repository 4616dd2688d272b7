"""UDP flood drain: how many datagrams a second echostat reads while one source floods it.

echostat runs pinned to CPU 0 with a UDP listener and its default bounds (so the flood, from
one source, is mostly dropped by `udp.max_datagrams_per_s_per_ip` after being read); an
open-loop flooder in C (`udp_flood.c`, sendmmsg, bounded in count and time) runs pinned to
CPU 1. Per run: datagrams sent per second, datagrams echostat read per second (its
`datagrams_received`), the kernel's receive-buffer drops (the host's ``RcvbufErrors``, and
echostat's `dropped_by_reason.receive_buffer` where it has one) and echostat's CPU µs per
datagram read. With ``--ref REF`` the same runs alternate with the code of git revision REF,
so both see the same machine.

    .venv/bin/python bench/udp_flood.py --ref main     # about 30 s
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from servers import BENCH, HOST, REPO, free_port, pin_cpus, pinned, stop, wait_until
from source_tree import import_root
from udp import cpu_seconds, wait_for_echo

FLOOD_SOURCE = BENCH / "udp_flood.c"
FLOOD_DATAGRAMS = 3_000_000
FLOOD_SECONDS = 3.0
SIZE = 64


def build_flooder(workdir: Path) -> Path:
    binary = workdir / "udp_flood"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(FLOOD_SOURCE)], check=True)
    return binary


def receive_buffer_errors() -> int:
    """The host's UDP ``RcvbufErrors`` (every socket, this network namespace)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = next(pair for pair in itertools.pairwise(lines) if pair[0][0] == "Udp:")
    return int(values[names.index("RcvbufErrors")])


def udp_figures(status_port: int) -> tuple[int, int]:
    """(datagrams received, receive_buffer drops) of the first UDP listener."""
    with urllib.request.urlopen(f"http://{HOST}:{status_port}/api/stats", timeout=10) as answer:
        udp = json.load(answer)["udp_listeners"][0]
    return udp["datagrams_received"], udp["dropped_by_reason"].get("receive_buffer", 0)


def run_once(
    env: dict[str, str], flooder: Path, workdir: Path, cpus: tuple[str, str]
) -> dict[str, float]:
    """One flood against the echostat that `env` imports (run from `workdir`, so that the
    import root on its PYTHONPATH, not a source tree in the current directory, decides)."""
    port, status_port = free_port(), free_port()
    config = workdir / "flood.yaml"
    config.write_text(
        f"listeners:\n  - {{name: udp, host: {HOST}, port: {port}, protocol: udp}}\n"
        f"status: {{host: {HOST}, port: {status_port}}}\nlog_level: error\n"
    )
    argv = [sys.executable, "-m", "echostat", "--config", str(config)]
    server = subprocess.Popen(pinned(cpus[0], argv), cwd=workdir, env=env)
    try:
        wait_for_echo(port, server, "echostat")
        wait_until(lambda: _answers(status_port), server, "echostat", "its status page")
        received, drops = udp_figures(status_port)
        errors, cpu = receive_buffer_errors(), cpu_seconds(server.pid)
        flood = [str(flooder), HOST, str(port), str(SIZE), str(FLOOD_DATAGRAMS), str(FLOOD_SECONDS)]
        done = subprocess.run(pinned(cpus[1], flood), capture_output=True, text=True, check=True)
        sent, elapsed_s = int(done.stdout.split()[0]), float(done.stdout.split()[1])
        time.sleep(0.5)  # let the server empty its receive buffer before reading the counts
        received_after, drops_after = udp_figures(status_port)
        read = received_after - received
        return {
            "sent_per_s": sent / elapsed_s,
            "read_per_s": read / elapsed_s,
            "kernel_drops": receive_buffer_errors() - errors,
            "echostat_drops": drops_after - drops,
            "cpu_us": (cpu_seconds(server.pid) - cpu) / max(read, 1) * 1e6,
        }
    finally:
        stop(server)


def _answers(status_port: int) -> bool:
    try:
        udp_figures(status_port)
    except OSError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", help="also run the code of this git revision, alternating")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    server_cpu, (flood_cpu,) = pin_cpus(True, loadgen_procs=1)
    cpus = (server_cpu or "0", flood_cpu or "1")
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        flooder = build_flooder(workdir)
        trees = {"this tree": dict(os.environ)}
        if args.ref:
            source = workdir / "ref"
            source.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.ref], cwd=REPO, capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
            root = import_root(source, workdir / "ref-root")
            trees[args.ref] = {**os.environ, "PYTHONPATH": str(root)}
        for rep in range(args.reps):
            for name, env in trees.items():
                print(f"  rep {rep + 1}/{args.reps}: {name}", file=sys.stderr)
                results.setdefault(name, []).append(run_once(env, flooder, workdir, cpus))
    print(
        "| code | flood sent/s | read by echostat/s | kernel drops (RcvbufErrors) |"
        " receive_buffer shown | CPU µs per datagram read |"
    )
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(
            f"| {name} | {med['sent_per_s']:,.0f} | {med['read_per_s']:,.0f} |"
            f" {med['kernel_drops']:,.0f} | {med['echostat_drops']:,.0f} | {med['cpu_us']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
