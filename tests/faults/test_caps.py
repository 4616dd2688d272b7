"""Connection caps: the whole process and one client address, checked at accept time."""

from __future__ import annotations

import asyncio
import socket

from tests.faults.conftest import StartService
from tests.faults.support import connect, echo, read_until_closed
from tests.helpers import DEADLINE_S, stats_when

CAP = 20
OVER_CAP = 50
PER_IP_CAP = 5


async def served(sock: socket.socket) -> bool:
    """Whether `sock` echoes (True) or was closed by the server unanswered (False)."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, b"hello")
        reply = await loop.sock_recv(sock, 5)
    except ConnectionError:
        return False
    if not reply:
        return False
    assert reply == b"hello"
    return True


async def test_global_cap_serves_exactly_max_connections(start_service: StartService) -> None:
    """With max_connections N and N+50 clients, N echo and 50 are rejected and counted."""
    service = await start_service(limits={"max_connections": CAP, "max_connections_per_ip": 0})
    port = service.echo_port("main")
    clients = await asyncio.gather(*(connect(port) for _ in range(CAP + OVER_CAP)))
    document = await stats_when(
        service.status_port,
        lambda s: s["connections"]["accepted"] + s["connections"]["rejected"] == CAP + OVER_CAP,
    )

    outcomes = await asyncio.wait_for(asyncio.gather(*(served(c) for c in clients)), DEADLINE_S)
    assert outcomes.count(True) == CAP
    assert document["connections"]["active"] == CAP
    assert document["connections"]["rejected_by_reason"] == {"max_connections": OVER_CAP}
    for sock in clients:
        sock.close()


async def test_per_ip_cap_spares_other_addresses(start_service: StartService) -> None:
    """With max_connections_per_ip 5, a 6th client from 127.0.0.1 is rejected, 127.0.0.2 isn't."""
    service = await start_service(limits={"max_connections_per_ip": PER_IP_CAP})
    port = service.echo_port("main")
    clients = [await connect(port) for _ in range(PER_IP_CAP)]
    for sock in clients:
        assert await echo(sock, b"in") == b"in"

    with await connect(port) as extra, await connect(port, source="127.0.0.2") as other:
        assert await asyncio.wait_for(read_until_closed(extra), DEADLINE_S) == 0
        assert await echo(other, b"other address") == b"other address"
        document = await stats_when(
            service.status_port, lambda s: s["connections"]["rejected"] == 1
        )
    assert document["connections"]["rejected_by_reason"] == {"max_connections_per_ip": 1}
    assert document["connections"]["active"] == PER_IP_CAP + 1
    for sock in clients:
        sock.close()
