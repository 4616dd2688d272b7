"""Measures the status side under abuse: health checks while it is full, echo delays while
slow readers fetch pages of connections.

Run from the repository: ``python bench/status_load.py health`` or ``python
bench/status_load.py pages [ECHO_CONNECTIONS] [SLOW_READERS] [SECONDS] [BUDGET_BYTES]``. It
starts echostat itself (loopback, ports picked by the kernel), prints its figures, and stops
it by PID. ``python bench/status_load.py hold ECHO_CONNECTIONS SLOW_READERS SECONDS`` runs
echostat in this process and measures how long its loop holds the CPU at a stretch.
"""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = b"GET /api/connections?limit=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PIPELINED = 16
READ_BYTES_PER_S = 1024
"""How fast a slow reader reads its pages (the 1 KB/s of the report that found the fault)."""


def start(config: str) -> tuple[subprocess.Popen[str], int, int]:
    """echostat on `config`; its process, echo port and status port."""
    path = Path(tempfile.mkdtemp()) / "config.yaml"
    path.write_text(config)
    process = subprocess.Popen(
        [sys.executable, "-m", "echostat", "--config", str(path)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    ports: dict[str, int] = {}
    while len(ports) < 2:
        line = process.stderr.readline()
        assert line, "echostat exited"
        if found := re.search(r"status page on http://[^ ]+:(\d+)/", line):
            ports["status"] = int(found[1])
        if found := re.search(r"main on [^ ;]+:(\d+)", line):
            ports["echo"] = int(found[1])
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, ports["echo"], ports["status"]


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found is not None
    return int(found[1]) * 1024


async def ask(port: int, path: str) -> tuple[int, float]:
    """GET `path` on a new connection: the status code and seconds to the whole answer."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return int(answer.split(b" ", 2)[1]), time.perf_counter() - started


def metric(text: bytes, name: str) -> float:
    found = re.search(rb"(?m)^" + re.escape(name.encode()) + rb" (\S+)$", text)
    return float(found[1]) if found else 0.0


async def scrape(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    text = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return text


async def health() -> None:
    """256 clients open /api/events and sit; then /healthz, /readyz, /metrics and / asked
    100 times each, one after another."""
    process, _, status_port = start("listeners: [{port: 0}]\nstatus: {port: 0}\n")
    try:
        holders = []
        for _ in range(256):
            reader, writer = await asyncio.open_connection("127.0.0.1", status_port)
            writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            holders.append((reader, writer))
        await asyncio.sleep(2)  # let every stream start or be refused
        text = await scrape(status_port)
        streams = metric(text, "echostat_status_streams_active")
        active = metric(text, "echostat_status_connections_active")
        for path in ("/healthz", "/readyz", "/metrics", "/"):
            answers = [await ask(status_port, path) for _ in range(100)]
            codes = sorted({code for code, _ in answers})
            took = sorted(seconds * 1000 for _, seconds in answers)
            print(
                f"{path}: codes {codes}, ms median {statistics.median(took):.1f}"
                f" p99 {took[98]:.1f} max {took[-1]:.1f}"
            )
        text = await scrape(status_port)
        refused = re.findall(rb'status_connections_rejected_total\{reason="(\w+)"\} (\S+)', text)
        print(f"held: {active:.0f} status connections, {streams:.0f} streams; refused {refused}")
    finally:
        process.kill()
        process.wait()


def echo_probe(port: int, stop: threading.Event, delays: list[float]) -> None:
    """64-byte round trips every 10 ms on one connection until `stop`, in a thread of its own
    so that this script's loop doesn't delay them."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not stop.is_set():
            started = time.perf_counter()
            sock.sendall(b"e" * 64)
            got = 0
            while got < 64:
                got += len(sock.recv(64 - got))
            delays.append(time.perf_counter() - started)
            time.sleep(0.01)


async def slow_reader(port: int, stop: asyncio.Event) -> None:
    """Asks for `PIPELINED` pages at once and reads them at `READ_BYTES_PER_S`."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, PAGE * PIPELINED)
    try:
        while not stop.is_set():
            if not await loop.sock_recv(sock, READ_BYTES_PER_S):
                break  # closed by the server
            await asyncio.sleep(1)
    except ConnectionResetError:
        pass
    finally:
        sock.close()


async def walker(port: int, stop: asyncio.Event) -> int:
    """Walks every connection in pages of 1,000 until `stop`; returns the rows read."""
    rows = 0
    while not stop.is_set():
        cursor: str | None = "0"
        while cursor is not None and not stop.is_set():
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
            writer.write(
                f"GET /api/connections?limit=1000&cursor={cursor} HTTP/1.0\r\n"
                "Host: 127.0.0.1\r\n\r\n".encode()
            )
            body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
            writer.close()
            rows += body.count(b'"peer"')
            found = re.search(rb'"next_cursor": "([\d-]+)"', body)
            cursor = found[1].decode() if found else None
    return rows


async def pages(connections: int, readers: int, seconds: float, budget: int) -> None:
    """`connections` idle echo connections; a bystander's echo delays alone, then while
    `readers` slow readers fetch pages and one client walks them all with the cursor."""
    config = (
        f"listeners: [{{port: 0}}]\nstatus: {{port: 0, max_buffered_bytes: {budget}}}\n"
        f"limits: {{max_connections: {connections + 100}, max_connections_per_ip: 0}}\n"
    )
    process, echo_port, status_port = start(config)
    loop = asyncio.get_running_loop()
    held = []
    try:
        for _ in range(connections):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", echo_port))
            held.append(sock)
        await asyncio.sleep(2)
        baseline = rss_bytes(process.pid)
        quiet = await delays_while(echo_port, seconds / 2, None)
        stop = asyncio.Event()
        load = [
            *(asyncio.ensure_future(slow_reader(status_port, stop)) for _ in range(readers)),
            asyncio.ensure_future(walker(status_port, stop)),
        ]
        peak, queued = baseline, 0.0

        async def sample() -> None:
            nonlocal peak, queued
            while not stop.is_set():
                peak = max(peak, rss_bytes(process.pid))
                text = await scrape(status_port)
                queued = max(queued, metric(text, "echostat_status_buffered_bytes"))
                await asyncio.sleep(0.25)

        sampler = asyncio.ensure_future(sample())
        busy = await delays_while(echo_port, seconds, stop)
        results = await asyncio.gather(*load, sampler)
        text = await scrape(status_port)
        closed = metric(
            text, 'echostat_status_connections_closed_by_server_total{reason="max_buffered_bytes"}'
        )
        print(f"echo delay ms, no status load: {describe(quiet)}")
        print(
            f"echo delay ms, {readers} slow readers + a cursor walk over {connections}"
            f" connections: {describe(busy)}"
        )
        print(
            f"walked rows {results[-2]}; most queued for status clients {queued / 2**20:.2f} MiB;"
            f" closed for the budget {closed:.0f}; RSS {baseline / 2**20:.0f} ->"
            f" peak {peak / 2**20:.0f} MiB"
        )
    finally:
        for sock in held:
            sock.close()
        process.kill()
        process.wait()


async def delays_while(port: int, seconds: float, stop: asyncio.Event | None) -> list[float]:
    """Echo round trips for `seconds`; sets `stop` at the end."""
    delays: list[float] = []
    done = threading.Event()
    probe = threading.Thread(target=echo_probe, args=(port, done, delays))
    probe.start()
    await asyncio.sleep(seconds)
    done.set()
    if stop is not None:
        stop.set()
    await asyncio.get_running_loop().run_in_executor(None, probe.join)
    return delays


def describe(delays: list[float]) -> str:
    ms = sorted(d * 1000 for d in delays)
    p99 = ms[int(len(ms) * 0.99)]
    return f"n {len(ms)} median {statistics.median(ms):.2f} p99 {p99:.2f} max {ms[-1]:.2f}"


async def hold(connections: int, readers: int, seconds: float) -> None:
    """echostat in this process; from a thread of their own, `connections` echo connections,
    then `readers` slow readers and a cursor walk. The figure is the longest the echostat
    loop spent on the CPU between two turns of a 1 ms heartbeat: how long an echo would wait
    on an idle machine, whatever else the machine runs meanwhile."""
    from echostat.server.config import Config, LimitsConfig, ListenerConfig, StatusConfig
    from echostat.service import Service

    limits = LimitsConfig(max_connections=connections + 100, max_connections_per_ip=0)
    service = Service(Config((ListenerConfig(port=0),), status=StatusConfig(port=0), limits=limits))
    await service.start()
    echo_port, status_port = service.echo_port("main"), service.status_port
    holds: list[float] = []
    phase = {"busy": False}
    busy_holds: list[float] = []

    async def heartbeat() -> None:
        last = time.thread_time()
        while True:
            await asyncio.sleep(0.001)
            now = time.thread_time()
            (busy_holds if phase["busy"] else holds).append(now - last)
            last = now

    async def clients() -> None:
        loop = asyncio.get_running_loop()
        held = []
        for _ in range(connections):
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", echo_port))
            held.append(sock)
        await asyncio.sleep(seconds / 2)
        stop = asyncio.Event()
        phase["busy"] = True
        load = [asyncio.ensure_future(slow_reader(status_port, stop)) for _ in range(readers)]
        walked = asyncio.ensure_future(walker(status_port, stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*load)
        print(f"walked rows {await walked}")
        for sock in held:
            sock.close()

    beat = asyncio.ensure_future(heartbeat())
    client = threading.Thread(target=lambda: asyncio.run(clients()))
    client.start()
    await asyncio.get_running_loop().run_in_executor(None, client.join)
    beat.cancel()
    print(f"loop CPU between heartbeats ms, no status load: {describe(holds)}")
    print(
        f"loop CPU between heartbeats ms, {readers} slow readers + a walk: {describe(busy_holds)}"
    )
    await service.stop()


def main() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    if sys.argv[1] == "health":
        asyncio.run(health())
    elif sys.argv[1] == "hold":
        asyncio.run(hold(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
    else:
        given = [float(arg) for arg in sys.argv[2:6]]
        numbers = [*given, *(10000.0, 40.0, 20.0, 16.0 * 2**20)[len(given) :]]
        asyncio.run(pages(int(numbers[0]), int(numbers[1]), numbers[2], int(numbers[3])))


if __name__ == "__main__":
    main()
