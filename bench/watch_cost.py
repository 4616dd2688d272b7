"""What watching costs the echo path: echostat with no watch targets against echostat with 16
targets probed every second, side by side on the same machine, alternating.

Three echostat processes: a peer that is watched, and two servers under test, `none` (no
``watch`` section) and `watch16` (16 TCP targets at the peer, ``interval_s: 1``, 5 round trips
of 64 bytes each). First both sit idle for `--idle` seconds and their CPU time is read from
/proc (the watcher's own cost); then each takes `--reps` pingpong loads of `--connections`
connections from bench/loadgen.py in turn, A B A B, and the figures that compare are the
server's CPU time per verified round trip, the round trips per second and p50/p99.

    .venv/bin/python bench/watch_cost.py --idle 20 --reps 3 --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from loadgen import cpu_seconds

HERE = Path(__file__).resolve().parent
STARTED = re.compile(r"main on 127\.0\.0\.1:(\d+); status page on http://127\.0\.0\.1:(\d+)/")
START_DEADLINE_S = 30.0


class Echostat:
    """``python -m echostat`` with a config of `watch` targets; `port` once started."""

    def __init__(self, folder: Path, name: str, watch: dict[str, Any] | None) -> None:
        config: dict[str, Any] = {
            "listeners": [{"name": "main", "host": "127.0.0.1", "port": 0}],
            "status": {"host": "127.0.0.1", "port": 0},
            "limits": {"max_connections_per_ip": 0},
            "log_level": "warning" if watch else "info",
        }
        if watch:
            config["watch"] = watch
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "echostat", "--config", str(path), "--set", "log_level=info"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.port = 0
        deadline = time.monotonic() + START_DEADLINE_S
        assert self.process.stderr is not None
        while time.monotonic() < deadline and (line := self.process.stderr.readline()):
            if found := STARTED.search(line):
                self.port = int(found[1])
                break
        if not self.port:
            self.stop()
            raise RuntimeError(f"echostat {name} did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=START_DEADLINE_S)


def load(server: Echostat, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "pingpong",
        *("--port", str(server.port), "--size", "64"),
        *("--connections", str(args.connections), "--duration", str(args.duration)),
        *("--server-pid", str(server.pid)),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=args.duration + 60
    )
    result: dict[str, Any] = json.loads(done.stdout)
    result["cpu_us_per_round_trip"] = round(
        result["server_cpu"] / result["round_trips_per_s"] * 1e6, 3
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=20.0, help="idle seconds measured")
    parser.add_argument("--reps", type=int, default=3, help="loads per server, alternating")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--targets", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        peer = Echostat(Path(folder), "peer", None)
        watch = {
            "targets": [
                {"name": f"t{index:02d}", "target": f"127.0.0.1:{peer.port}", "interval_s": 1}
                for index in range(args.targets)
            ]
        }
        servers = {
            "none": Echostat(Path(folder), "none", None),
            f"watch{args.targets}": Echostat(Path(folder), "watch", watch),
        }
        try:
            report = measure(servers, args)
        finally:
            for server in [*servers.values(), peer]:
                server.stop()
    print(json.dumps(report, indent=2))


def measure(servers: dict[str, Echostat], args: argparse.Namespace) -> dict[str, Any]:
    time.sleep(2.0)  # let the watcher's first rounds (spread over one interval) begin
    before = {name: cpu_seconds(server.pid) for name, server in servers.items()}
    started = time.monotonic()
    time.sleep(args.idle)
    elapsed = time.monotonic() - started
    idle = {
        name: round((cpu_seconds(server.pid) - before[name]) / elapsed * 1e3, 2)
        for name, server in servers.items()
    }
    loads: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for _ in range(args.reps):
        for name, server in servers.items():
            loads[name].append(load(server, args))
    summary = {
        name: {
            key: statistics.median(run[key] for run in runs)
            for key in ("cpu_us_per_round_trip", "round_trips_per_s", "p50_us", "p99_us")
        }
        for name, runs in loads.items()
    }
    return {
        "idle_cpu_ms_per_s": idle,
        "load_medians": summary,
        "loads": loads,
        "settings": vars(args),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    main()
