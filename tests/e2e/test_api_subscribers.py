"""Many open dashboards share one snapshot per tick and leave the echo path exact."""

from __future__ import annotations

import asyncio
import random

from echostat.service import Service
from tests.helpers import close_all

SUBSCRIBERS = 50
ECHO_CLIENTS = 10
MAX_ROUNDS = 500
"""Round trips per echo client at most; the load also stops once every subscriber is served."""

TICKS_WANTED = 2
TIMEOUT_S = 20.0


async def subscribe(port: int) -> list[bytes]:
    """Read /api/events until `TICKS_WANTED` stats messages arrived; return their bodies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    ticks: list[bytes] = []
    try:
        while len(ticks) < TICKS_WANTED:
            line = await reader.readline()
            assert line, "the push channel closed early"
            if line.startswith(b'data: {"version"'):
                ticks.append(line)
    finally:
        await close_all([writer])
    return ticks


async def echo_until(port: int, served: asyncio.Event, seed: int) -> int:
    """Echo random payloads until `served` is set or `MAX_ROUNDS`; return the rounds done."""
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rounds = 0
    try:
        while rounds < MAX_ROUNDS and not served.is_set():
            payload = rng.randbytes(rng.randint(1, 64 * 1024))
            writer.write(payload)
            assert await reader.readexactly(len(payload)) == payload
            rounds += 1
    finally:
        await close_all([writer])
    return rounds


async def test_fifty_subscribers_get_updates_while_every_echo_stays_exact(
    service: Service,
) -> None:
    """50 SSE subscribers each receive new ticks while echo clients see every byte back."""
    served = asyncio.Event()
    echoes = [
        asyncio.create_task(echo_until(service.echo_port("main"), served, seed))
        for seed in range(ECHO_CLIENTS)
    ]
    subscribers = [subscribe(service.status_port) for _ in range(SUBSCRIBERS)]
    received = await asyncio.wait_for(asyncio.gather(*subscribers), TIMEOUT_S)
    served.set()
    rounds = await asyncio.wait_for(asyncio.gather(*echoes), TIMEOUT_S)

    assert all(len(ticks) == TICKS_WANTED for ticks in received)
    assert all(ticks[0] != ticks[1] for ticks in received)
    assert all(count > 0 for count in rounds)
