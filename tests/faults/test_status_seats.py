"""A full status side still answers health checks; streams and single addresses have caps."""

from __future__ import annotations

import asyncio
import re
import time

from echostat.web.seats import RESERVED_HEADER_TIMEOUT_S, RESERVED_SEATS_PER_IP
from tests.faults.conftest import StartService
from tests.faults.test_status_limits import Connection, read_response
from tests.helpers import DEADLINE_S, close_all, wait_until

CAP = 40
PROBES = 20
"""Health checks of each kind asked while the cap is held."""
EVENTS = b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def open_from(port: int, source: str = "127.0.0.1") -> Connection:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def ask(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET `path` on a connection of its own from `source`: status code and body."""
    reader, writer = await open_from(port, source)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    try:
        return await read_response(reader)
    finally:
        writer.close()


async def open_stream(port: int, source: str = "127.0.0.1") -> Connection:
    """A push stream whose response has started (its headers are in)."""
    reader, writer = await open_from(port, source)
    writer.write(EVENTS)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


def metric(text: bytes, name: str) -> float:
    found = re.search(rb"(?m)^" + re.escape(name.encode()) + rb" (\S+)$", text)
    assert found is not None, name
    return float(found[1])


async def test_health_checks_answer_while_streams_and_idle_connections_fill_the_cap(
    start_service: StartService,
) -> None:
    """With status.max_connections held by push streams and idle keep-alive connections,
    /healthz, /readyz and /metrics keep answering 200 while the page and API get 503."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "max_connections": CAP})
    port = service.status_port
    held = [await open_stream(port) for _ in range(CAP // 2)]
    for _ in range(CAP - len(held)):  # idle keep-alive: one request answered, then silence
        reader, writer = await open_from(port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        held.append((reader, writer))

    slowest = 0.0
    for _ in range(PROBES):
        for path in ("/healthz", "/readyz", "/metrics"):
            asked = time.monotonic()
            code, body = await ask(port, path)
            slowest = max(slowest, time.monotonic() - asked)
            assert code == 200, (path, body)
    assert slowest < DEADLINE_S
    for path in ("/", "/api/stats", "/api/events"):
        code, body = await ask(port, path)
        assert code == 503 and b"status.max_connections is 40" in body, (path, body)

    code, metrics = await ask(port, "/metrics")
    assert metric(metrics, "echostat_status_streams_active") == CAP // 2
    assert (
        metric(metrics, 'echostat_status_connections_rejected_total{reason="max_connections"}') == 3
    )
    await close_all([writer for _, writer in held])


async def test_streams_beyond_max_streams_get_503_naming_it(start_service: StartService) -> None:
    """With status.max_streams 3, a fourth push stream is refused with 503 naming the setting
    and counted, while the API answers; once one stream ends, a new one is served."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "max_streams": 3})
    port = service.status_port
    streams = [await open_stream(port) for _ in range(3)]
    code, body = await ask(port, "/api/events")
    assert code == 503 and b"too many live streams (status.max_streams is 3)" in body, body
    assert (await ask(port, "/api/stats"))[0] == 200

    await close_all([streams.pop()[1]])
    counters = service.status.counters if service.status else None
    assert counters is not None
    await wait_until(lambda: counters.streams == 2, "the closed stream to end")
    streams.append(await open_stream(port))
    code, body = await ask(port, "/api/stats")
    assert b'"rejected_by_reason": {"max_streams": 1}' in body, body
    await close_all([writer for _, writer in streams])


async def test_one_address_is_held_to_max_connections_per_ip(start_service: StartService) -> None:
    """With status.max_connections_per_ip 5, a sixth connection from one address gets 503
    naming the setting (yet /healthz answers it), while another address is served."""
    service = await start_service(
        status={"host": "127.0.0.1", "port": 0, "max_connections_per_ip": 5}
    )
    port = service.status_port
    held = [await open_from(port, "127.0.0.2") for _ in range(5)]
    code, body = await ask(port, "/api/stats", "127.0.0.2")
    assert code == 503 and b"status.max_connections_per_ip is 5" in body, body
    assert (await ask(port, "/healthz", "127.0.0.2"))[0] == 200
    code, body = await ask(port, "/api/stats", "127.0.0.3")
    assert code == 200
    assert b'"rejected_by_reason": {"max_connections_per_ip": 1}' in body, body
    await close_all([writer for _, writer in held])


async def test_the_reserve_is_bounded_per_address_and_in_time(
    start_service: StartService,
) -> None:
    """At the cap, one address holds at most RESERVED_SEATS_PER_IP silent reserved seats (the
    next connection is refused at once), each answered 503 naming the cap and closed at the
    reserve's header timeout, and counted as refused; then health checks are answered again."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "max_connections": 2})
    port = service.status_port
    held = [await open_stream(port) for _ in range(2)]
    started = time.monotonic()
    silent = [await open_from(port) for _ in range(RESERVED_SEATS_PER_IP)]
    counters = service.status.counters if service.status else None
    assert counters is not None
    await wait_until(lambda: counters.active == 2 + RESERVED_SEATS_PER_IP, "the reserve to fill")
    code, body = await ask(port, "/healthz")
    assert code == 503 and b"status.max_connections is 2" in body, body

    answers = await asyncio.gather(*(read_to_close(reader) for reader, _ in silent))
    for answer, closed_at in answers:
        assert answer.startswith(b"HTTP/1.1 503 ") and b"status.max_connections is 2" in answer
        assert closed_at - started >= RESERVED_HEADER_TIMEOUT_S - 0.01
    assert (await ask(port, "/healthz"))[0] == 200
    assert counters.rejected["max_connections"] == 1 + RESERVED_SEATS_PER_IP
    assert counters.closed_by_server["header_timeout"] == 0
    await close_all([writer for _, writer in held + silent])


async def read_to_close(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    answer = await asyncio.wait_for(reader.read(), DEADLINE_S)
    return answer, time.monotonic()


async def test_health_checks_answered_from_the_reserve_count_as_accepted(
    start_service: StartService,
) -> None:
    """A connection the reserve serves counts in status_connections.accepted, as a refused
    one at a cap counts in rejected: no connection the status side got goes uncounted."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "max_connections": 1})
    port = service.status_port
    held = await open_from(port)
    counters = service.status.counters
    await wait_until(lambda: counters.active == 1, "the held connection counted")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await ask(port, path))[0] == 200, path
    assert (await ask(port, "/api/stats"))[0] == 503
    assert (counters.accepted, sum(counters.rejected.values())) == (4, 1)
    await close_all([held[1]])


async def test_a_refusal_at_the_cap_carries_the_headers_every_response_does(
    start_service: StartService,
) -> None:
    """The 503 beyond the cap carries the security headers every other response carries
    (README, "Limits and security"), nosniff among them."""
    service = await start_service(status={"host": "127.0.0.1", "port": 0, "max_connections": 1})
    held = await open_from(service.status_port)
    await wait_until(lambda: service.status.counters.active == 1, "the held connection counted")
    reader, writer = await open_from(service.status_port)
    writer.write(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)).decode()
    assert head.startswith("HTTP/1.1 503")
    for header in (
        "Content-Security-Policy: default-src 'self'",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
    ):
        assert f"\r\n{header}" in head, head
    await close_all([writer, held[1]])
