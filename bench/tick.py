"""Time the status tick, the work the page's push channel does once a second, with thousands
of open connections: path quality on and off, side by side, pinned to one CPU.

Each tick is `StatsFeed.publish`: a snapshot (with path quality, reading TCP_INFO for the
connections whose interval is up), the 100 busiest connections (reading theirs), rates and
one JSON encoding. Connections are real loopback sockets registered as `EchoProtocol`s; a
fake clock moves one second per tick, as on a live server, so each tick reads its steady-state
share of them. Measured twice: with idle connections (those with nothing new are not read
again) and with every connection moving bytes between ticks (each read once per interval).

    .venv/bin/python bench/tick.py --connections 10000
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import sys
import time

from echostat.server.budget import BufferBudget
from echostat.server.config import Config
from echostat.server.echo import EchoProtocol
from echostat.server.registry import Registry
from echostat.web.feed import StatsFeed

DEFAULTS = Config()
INTERVAL_S = DEFAULTS.tcp_info_interval_s
"""tcp_info_interval_s, the default."""


def open_connections(count: int) -> tuple[list[socket.socket], int]:
    """`count` accepted loopback connections, each after one round trip, and the pid of the
    child process that holds their client ends (one process can't hold both ends of 10,000
    under the usual 20,000-descriptor limit); the child exits when its stdin closes."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        clients = []
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"x")
            client.recv(1)
            clients.append(client)
        os.read(read_end, 1)  # until the parent is done
        os._exit(0)
    os.close(read_end)
    servers = []
    for _ in range(count):
        server, _ = listener.accept()
        server.sendall(server.recv(1))
        servers.append(server)
    listener.close()
    return servers, write_end


class Ticker:
    """A status feed over `sockets` registered as echo connections, on a clock that moves one
    second per tick."""

    def __init__(self, sockets: list[socket.socket], path_quality: bool) -> None:
        self.now = 0.0
        interval_s = INTERVAL_S if path_quality else None
        self.registry = Registry(clock=lambda: self.now, tcp_info_interval_s=interval_s)
        listener = self.registry.add_listener("main", "127.0.0.1", 7007)
        limits = DEFAULTS.limits
        budget = BufferBudget(limits.max_buffered_bytes)
        for n, sock in enumerate(sockets):
            conn = EchoProtocol(
                "127.0.0.1",
                40000 + n,
                listener,
                self.registry,
                budget,
                limits.max_buffer_bytes,
                sock,
            )
            self.registry.open(conn)
            conn.bytes_received = conn.bytes_sent = n
        self.feed = StatsFeed(self.registry)

    def tick(self, busy: bool) -> tuple[float, float]:
        """One tick's wall time and CPU time, in ms; `busy`: every connection moved bytes."""
        self.now += 1.0
        if busy:
            for conn in self.registry.active_connections():
                conn.bytes_received += 1
        started, cpu_started = time.perf_counter(), time.thread_time()
        self.feed.publish()
        return (time.perf_counter() - started) * 1000, (time.thread_time() - cpu_started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=60, help="ticks per setting (default 60)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (default 0)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    wanted = args.connections + 64
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(f"tick: need {wanted} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    sockets, child_stdin = open_connections(args.connections)
    print(f"status tick with {args.connections:,} open connections, {args.ticks} ticks each,")
    print(f"pinned to CPU {args.cpu}; load average {os.getloadavg()[0]:.2f}")
    print(
        "| connections | path quality | CPU ms median | CPU ms max | wall ms median | wall ms max |"
    )
    print("|---|---|---|---|---|---|")
    for busy in (False, True):
        tickers = {"on": Ticker(sockets, True), "off": Ticker(sockets, False)}
        for ticker in tickers.values():  # the first interval reads every connection once
            for _ in range(int(INTERVAL_S)):
                ticker.tick(busy)
        wall: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.ticks):  # alternate, so load from elsewhere hits both alike
            for name, ticker in tickers.items():
                elapsed, used = ticker.tick(busy)
                wall[name].append(elapsed)
                cpu[name].append(used)
        for name in wall:
            figures = [statistics.median(cpu[name]), max(cpu[name])]
            figures += [statistics.median(wall[name]), max(wall[name])]
            shown = " | ".join(f"{value:.2f}" for value in figures)
            print(f"| {'all moving bytes' if busy else 'idle'} | {name} | {shown} |")
    os.close(child_stdin)
    os.wait()
    for server in sockets:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
