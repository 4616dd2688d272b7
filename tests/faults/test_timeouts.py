"""Time limits: idle clients, clients that stop reading, and connections past their lifetime."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from tests.faults.conftest import StartEchostat, StartService
from tests.faults.support import (
    connect,
    connections,
    echo,
    read_until_closed,
    send_until_blocked,
)
from tests.helpers import DEADLINE_S, stats_when

KIB = 1024
MIB = KIB * KIB
NON_READERS = 16
READ_CHUNK_BYTES = 256 * KIB
"""The most asyncio reads from a socket at once: one read may overshoot the buffer bound."""


async def test_idle_client_is_closed_after_idle_timeout(start_service: StartService) -> None:
    """A client that goes quiet is closed no sooner than idle_timeout_s and counted."""
    service = await start_service(limits={"idle_timeout_s": 1})
    with await connect(service.echo_port("main")) as sock:
        last_activity = time.monotonic()
        assert await echo(sock, b"hello") == b"hello"

        assert await asyncio.wait_for(read_until_closed(sock), DEADLINE_S) == 0
        assert time.monotonic() - last_activity >= 1.0
    counts = await connections(service.status_port)
    assert (counts["active"], counts["closed_by_server"]) == (0, {"idle_timeout": 1})


async def test_busy_client_is_closed_after_max_lifetime(start_service: StartService) -> None:
    """A client that keeps echoing is still closed at max_lifetime_s, and counted."""
    service = await start_service(limits={"idle_timeout_s": 0, "max_lifetime_s": 1.5})
    started = time.monotonic()
    with await connect(service.echo_port("main")) as sock:
        echoes = await asyncio.wait_for(_echo_until_closed(sock), DEADLINE_S)
        assert time.monotonic() - started >= 1.5
    assert echoes >= 2
    counts = await connections(service.status_port)
    assert (counts["active"], counts["closed_by_server"]) == (0, {"max_lifetime": 1})


async def test_max_lifetime_is_not_cut_short_by_a_wall_clock_step(
    start_service: StartService,
) -> None:
    """The wall clock stepped forward an hour (NTP, a restored VM) right after a client
    connected: the client still gets its full max_lifetime_s, timed from its connect."""
    service = await start_service(limits={"idle_timeout_s": 0, "max_lifetime_s": 2})
    registry = service.registry
    with await connect(service.echo_port("main")) as sock:
        connected = time.monotonic()
        assert await echo(sock, b"hello") == b"hello"
        registry.wall_clock = lambda: time.time() + 3600
        await asyncio.wait_for(read_until_closed(sock), DEADLINE_S)
        assert time.monotonic() - connected >= 2.0
    counts = await connections(service.status_port)
    assert counts["closed_by_server"] == {"max_lifetime": 1}


async def test_non_reading_clients_cost_bounded_memory_and_time_out(
    start_echostat: StartEchostat,
) -> None:
    """Clients that send but never read: RSS bounded by the buffer limit, closed when idle."""
    buffer_bytes = 256 * KIB
    server = start_echostat(limits={"idle_timeout_s": 2, "max_buffer_bytes": buffer_bytes})
    peak_rss = [server.rss_bytes()]
    baseline_rss = peak_rss[0]
    sampler = asyncio.ensure_future(_track_peak(server.rss_bytes, peak_rss))
    reader = await connect(server.echo_port)
    done = asyncio.Event()
    pings = asyncio.ensure_future(_echo_until_closed(reader, interval_s=0.25, done=done))
    floods = [await connect(server.echo_port) for _ in range(NON_READERS)]

    sent = await asyncio.gather(*(send_until_blocked(sock, 256 * MIB) for sock in floods))
    document = await stats_when(server.status_port, lambda s: s["connections"]["active"] == 1)
    sampler.cancel()
    done.set()

    # Each connection holds at most its write buffer plus one read; doubled for allocator slack.
    bound = NON_READERS * 2 * (buffer_bytes + READ_CHUNK_BYTES) + 16 * MIB
    assert peak_rss[0] - baseline_rss < bound < sum(sent), (peak_rss, baseline_rss, sent)
    assert document["connections"]["closed_by_server"] == {"idle_timeout": NON_READERS}
    for sock in floods:
        await asyncio.wait_for(read_until_closed(sock), DEADLINE_S)
        sock.close()
    assert await pings > 0
    assert await echo(reader, b"still here") == b"still here"
    reader.close()


async def _track_peak(sample: Callable[[], int], peak: list[int]) -> None:
    """Keep `peak[0]` at the largest `sample()` seen, sampling every 50 ms until cancelled."""
    while True:
        peak[0] = max(peak[0], sample())
        await asyncio.sleep(0.05)


async def _echo_until_closed(
    sock: socket.socket, interval_s: float = 0.2, done: asyncio.Event | None = None
) -> int:
    """Echo a short message every `interval_s` until the server closes or `done` is set.

    Returns how many echoes came back.
    """
    loop = asyncio.get_running_loop()
    echoes = 0
    while done is None or not done.is_set():
        try:
            await loop.sock_sendall(sock, b"tick")
            if not await loop.sock_recv(sock, 4):
                return echoes
        except ConnectionError:
            return echoes
        echoes += 1
        await asyncio.sleep(interval_s)
    return echoes
