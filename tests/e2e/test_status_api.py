"""The status side over real HTTP: /api/stats schema and exact counts, /healthz, /api/events."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

from tornado.httpclient import AsyncHTTPClient

from echostat.service import Service
from tests.helpers import DEADLINE_S, get_json, reset_on_close, within_deadline

CLIENTS = 5


async def test_stats_document_has_the_documented_schema(service: Service) -> None:
    """/api/stats carries connections, bytes, uptime and one entry per listener, typed."""
    stats = await get_json(service.status_port, "/api/stats")
    counts = {
        key: stats["connections"][key] for key in ("active", "accepted", "closed", "rejected")
    }
    assert counts == {"active": 0, "accepted": 0, "closed": 0, "rejected": 0}
    assert stats["bytes"] == {"received": 0, "sent": 0, "buffered": 0}
    assert isinstance(stats["uptime_seconds"], int | float) and stats["uptime_seconds"] >= 0
    assert stats["listeners"] == [
        {
            **stats["listeners"][0],
            "name": "main",
            "host": "127.0.0.1",
            "port": service.echo_port("main"),
            "active": 0,
        }
    ]


async def _poll_stats(port: int, done: Callable[[Any], bool]) -> list[Any]:
    """Fetch /api/stats until `done(document)`; return every document fetched, in order."""
    seen: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    while not seen or not done(seen[-1]):
        assert time.monotonic() < deadline, f"condition not met by {seen[-1]}"
        seen.append(await get_json(port, "/api/stats"))
    return seen


def _active(document: Any) -> int:
    return int(document["connections"]["active"])


async def test_counts_are_exact_through_connect_close_and_reset(service: Service) -> None:
    """5 clients show as 5 active as soon as accepted, never more; after closing or
    resetting, 0 active, 5 accepted, 5 closed, and bytes equal to what they sent."""
    port = service.echo_port("main")
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CLIENTS)]

    seen = await _poll_stats(service.status_port, lambda doc: _active(doc) == CLIENTS)
    assert max(map(_active, seen)) == CLIENTS

    sent = 0
    for size, client in enumerate(clients, start=1000):
        client.sendall(bytes(size))
        sent += size
    await _poll_stats(service.status_port, lambda doc: doc["bytes"]["sent"] >= sent)

    for client in clients[:2]:
        reset_on_close(client)
    for client in clients:
        client.close()
    *_, stats = await _poll_stats(service.status_port, lambda doc: _active(doc) == 0)
    assert stats["connections"] == {**stats["connections"], "accepted": CLIENTS, "closed": CLIENTS}
    assert stats["connections"]["rejected"] == 0
    assert stats["listeners"][0]["active"] == 0
    assert stats["bytes"] == {"received": sent, "sent": sent, "buffered": 0}


async def test_healthz_answers_200_while_accepting(service: Service) -> None:
    """/healthz is 200 while the echo listeners accept connections."""
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{service.status_port}/healthz")
    assert response.code == 200


async def test_events_stream_pushes_a_stats_document(service: Service) -> None:
    """/api/events is an SSE stream whose data lines are stats documents."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.status_port)
    writer.write(b"GET /api/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    head = await within_deadline(reader.readuntil(b"\r\n\r\n"))
    assert b" 200 " in head.split(b"\r\n")[0]
    assert b"content-type: text/event-stream" in head.lower()
    event = b""
    while not event.startswith(b"data: "):
        event = await within_deadline(reader.readuntil(b"\n\n"))
    document = json.loads(event.removeprefix(b"data: "))
    assert document["connections"]["active"] == 0
    assert document["listeners"][0]["port"] == service.echo_port("main")
    writer.close()
    await writer.wait_closed()
