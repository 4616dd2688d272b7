"""The status side's own limits: slow headers, idle keep-alive connections, the connection cap."""

from __future__ import annotations

import asyncio
import json
import re
import time

from tests.faults.conftest import StartEchostat, StartService
from tests.faults.support import connections
from tests.helpers import DEADLINE_S, get_json, status_fetch

SLOW_CLIENTS = 200
"""Hundreds, and fewer than the default status.max_connections, so the page has slots left."""
HEADER_TIMEOUT_S = 2.0
IDLE_TIMEOUT_S = 1.0
CAP = 20
OVER_CAP = 50
PARTIAL_REQUEST = b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: "
REQUEST = b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
TIMER_SLACK_S = 0.01
"""libuv counts its timers in whole milliseconds from the start of a loop iteration."""

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_status(port: int) -> Connection:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: its status code and body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
    code = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)content-length: (\d+)", head)
    assert length is not None, head
    return code, await reader.readexactly(int(length[1]))


async def closed_after(reader: asyncio.StreamReader, started: float) -> float:
    """Seconds from `started` until the server closes the connection (EOF or reset)."""
    try:
        await asyncio.wait_for(reader.read(), DEADLINE_S)
    except ConnectionResetError:
        pass
    return time.monotonic() - started


async def fetch_body(port: int, path: str) -> bytes:
    """GET `path` on a connection of its own; the body of the 200 it must get."""
    reader, writer = await open_status(port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    code, body = await read_response(reader)
    writer.close()
    assert code == 200
    return body


async def test_slow_header_clients_are_closed_at_the_header_timeout(
    start_echostat: StartEchostat,
) -> None:
    """200 clients that never finish their headers are closed at header_timeout_s, counted,
    and the page answers all the while."""
    server = start_echostat(
        status={"host": "127.0.0.1", "port": 0, "header_timeout_s": HEADER_TIMEOUT_S}
    )
    started = time.monotonic()
    slow = [await open_status(server.status_port) for _ in range(SLOW_CLIENTS)]
    for _, writer in slow:
        writer.write(PARTIAL_REQUEST)
    held = await get_json(server.status_port)
    assert held["status_connections"]["active"] >= SLOW_CLIENTS

    ended = asyncio.gather(*(closed_after(reader, started) for reader, _ in slow))
    while not ended.done():  # the page keeps answering until the last of them is closed
        await get_json(server.status_port)
        await asyncio.sleep(0.1)  # pacing the polls
    lifetimes = await ended
    assert min(lifetimes) >= HEADER_TIMEOUT_S - TIMER_SLACK_S
    assert max(lifetimes) < HEADER_TIMEOUT_S + DEADLINE_S
    document = await get_json(server.status_port)
    status = document["status_connections"]
    assert status["closed_by_server"] == {"header_timeout": SLOW_CLIENTS}
    assert status["active"] == 1  # this request
    metrics = (await fetch_body(server.status_port, "/metrics")).decode()
    assert (
        'echostat_status_connections_closed_by_server_total{reason="header_timeout"} 200.0'
        in metrics
    )
    for _, writer in slow:
        writer.close()
    assert server.tracebacks() == []


async def test_idle_keep_alive_connection_is_closed_at_the_idle_timeout(
    start_service: StartService,
) -> None:
    """A keep-alive connection is served twice, then closed idle_timeout_s after its last
    response, and counted."""
    service = await start_service(
        status={"host": "127.0.0.1", "port": 0, "idle_timeout_s": IDLE_TIMEOUT_S}
    )
    reader, writer = await open_status(service.status_port)
    for _ in range(2):
        asked = time.monotonic()  # before the response, so before the server's idle timer
        writer.write(REQUEST)
        assert (await read_response(reader))[0] == 200
    assert await closed_after(reader, asked) >= IDLE_TIMEOUT_S
    writer.close()
    response = await status_fetch(service, "/api/stats")
    status = json.loads(response.body)["status_connections"]
    assert status["closed_by_server"] == {"idle_timeout": 1}


async def test_status_cap_serves_n_and_refuses_the_rest_with_503(
    start_service: StartService,
) -> None:
    """With status.max_connections N, N connections are served; 50 more get 503 at once,
    naming the setting, and are counted."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "max_connections": CAP})
    held = [await open_status(service.status_port) for _ in range(CAP)]
    for reader, writer in held:
        writer.write(REQUEST)
        assert (await read_response(reader))[0] == 200

    for _ in range(OVER_CAP):
        reader, writer = await open_status(service.status_port)
        writer.write(REQUEST)
        code, body = await read_response(reader)
        assert code == 503 and b"status.max_connections is 20" in body, body
        writer.close()

    reader, writer = held[0]
    writer.write(REQUEST)
    code, body = await read_response(reader)
    status = json.loads(body)["status_connections"]
    assert (code, status["active"], status["rejected_by_reason"]) == (
        200,
        CAP,
        {"max_connections": OVER_CAP},
    )
    for _, writer in held:
        writer.close()
    assert (await connections(service.status_port))["active"] == 0
