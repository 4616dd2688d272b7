"""The process-wide buffer budget: 2,000 clients that send without reading, and after them."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

from echostat.server.budget import READ_BYTES, SQUEEZED_READ_BYTES
from echostat.server.config import LimitsConfig
from tests.faults.conftest import StartEchostat, StartService
from tests.faults.support import connect, echo, recv_exactly
from tests.helpers import REPO, get_json, payload, stats_when, wait_until

NON_READERS = 2000
PUSH_BYTES = 512 * 1024
"""What each non-reader tries to send: far more than its share of the budget."""
BUDGET_BYTES = LimitsConfig().max_buffered_bytes
OVERHEAD_PER_CONNECTION = 10 * 1024
"""The README promises about 6 KiB per connection beyond the budget; the rest is margin."""
RETURN_MARGIN_BYTES = 32 * 1024 * 1024
RETURN_WITHIN_S = 10.0
BULK = payload(1 << 20)


async def test_non_readers_hold_at_most_the_budget_and_give_it_back(
    start_echostat: StartEchostat,
) -> None:
    """2,000 non-readers: RSS grows by at most the budget plus a little per connection, other
    clients echo on at speed, /api/stats answers in under 100 ms; once they close, RSS comes
    back to within 32 MiB of where it was before them within 10 s."""
    server = start_echostat(
        4096, limits={"max_connections": NON_READERS + 100, "max_connections_per_ip": 0}
    )
    bystander = await connect(server.echo_port)
    before_s = await _timed(lambda: echo(bystander, BULK))
    baseline = server.rss_bytes()

    loader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.nonreaders",
        str(server.echo_port),
        str(NON_READERS),
        str(PUSH_BYTES),
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert loader.stdin is not None and loader.stdout is not None
    try:
        peak = baseline
        pushed = asyncio.ensure_future(loader.stdout.readline())

        def settled() -> bool:
            nonlocal peak
            peak = max(peak, server.rss_bytes())
            return pushed.done()

        await wait_until(settled, "the non-readers to stop sending", 60.0)
        assert pushed.result(), "the non-reading clients exited early"
        document = await stats_when(
            server.status_port, lambda s: s["connections"]["active"] == NON_READERS + 1
        )
        assert document["bytes"]["buffered"] >= BUDGET_BYTES - 65536, document["bytes"]
        during_s = await _timed(lambda: echo(bystander, BULK))
        latencies = [await _timed(lambda: get_json(server.status_port)) for _ in range(5)]
        peak = max(peak, server.rss_bytes())
    finally:
        loader.stdin.close()
        await loader.wait()

    growth = peak - baseline
    assert growth <= BUDGET_BYTES + NON_READERS * OVERHEAD_PER_CONNECTION, growth
    assert during_s < 1.0 + 2 * before_s, (before_s, during_s)
    assert statistics.median(latencies) < 0.1, latencies
    await stats_when(server.status_port, lambda s: s["connections"]["active"] == 1)
    await wait_until(
        lambda: server.rss_bytes() <= baseline + RETURN_MARGIN_BYTES,
        "RSS to come back down",
        RETURN_WITHIN_S,
    )
    print(
        f"RSS growth with {NON_READERS} non-readers: {growth / 2**20:.1f} MiB (budget"
        f" {BUDGET_BYTES / 2**20:.0f} MiB); /api/stats max {max(latencies) * 1000:.0f} ms;"
        f" after they left: {(server.rss_bytes() - baseline) / 2**20:.1f} MiB"
    )
    bystander.close()


async def test_a_reload_that_lowers_the_budget_holds_non_readers_to_the_new_one(
    start_service: StartService,
) -> None:
    """After a reload lowers ``limits.max_buffered_bytes`` to 1 MiB, 16 clients that send
    8 MiB each without reading make the server hold at most that, plus their last reads."""
    service = await start_service(limits={"max_connections_per_ip": 0})
    lowered = 1 << 20
    limits = dataclasses.replace(service.config.limits, max_buffered_bytes=lowered)
    service.reconfigure(dataclasses.replace(service.config, limits=limits))
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(16):
        sock = socket.socket()
        # A small fixed window: the echo backs up in the server, not in this socket.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", service.echo_port("main")))
        clients.append(sock)
    pushes = [asyncio.ensure_future(loop.sock_sendall(sock, b"x" * (8 << 20))) for sock in clients]
    budget = service.echo.budget
    try:
        await wait_until(lambda: budget.spent, "the lowered budget to be spent")
        assert budget.charged <= lowered + len(clients) * SQUEEZED_READ_BYTES + READ_BYTES
    finally:
        for push in pushes:
            push.cancel()
        for sock in clients:
            sock.close()


async def _timed(action: Callable[[], Awaitable[object]]) -> float:
    """Seconds `action()`'s awaitable takes."""
    started = time.monotonic()
    await action()
    return time.monotonic() - started


async def test_a_reader_that_falls_behind_and_catches_up_gets_every_byte(
    start_service: StartService,
) -> None:
    """A client that sends 8 MiB before it reads makes its echo queue (the server then reads
    into lent buffers, charged); once it reads, every byte comes back in order and the
    budget is given back."""
    service = await start_service(limits={"max_connections_per_ip": 0})
    budget = service.echo.budget
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", service.echo_port("main")))
    data = payload(8 << 20, seed=3)
    push = asyncio.ensure_future(loop.sock_sendall(sock, data))
    try:
        await wait_until(lambda: budget.charged > 0, "the echo to queue in the server")
        assert await recv_exactly(sock, len(data)) == data
        await push
        await wait_until(lambda: budget.charged == 0, "the budget to be given back")
    finally:
        push.cancel()
        sock.close()


async def test_with_every_read_lent_echo_is_exact(start_service: StartService) -> None:
    """A budget too small for held reads (1 MiB) lends every read: 4 MiB echo exactly."""
    service = await start_service(limits={"max_buffered_bytes": 1 << 20})
    assert service.echo.budget.lending
    sock = await connect(service.echo_port("main"))
    data = payload(4 << 20, seed=4)
    assert await echo(sock, data) == data
    sock.close()
