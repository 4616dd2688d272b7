"""File descriptors: a limit too low for the config, running out of them, and 10,000 clients."""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults.conftest import StartEchostat
from tests.faults.support import connect, connections, echo
from tests.helpers import stats_when

FD_LIMIT = 64
FITTING_MAX_CONNECTIONS = 30
"""With the 32 descriptors echostat reserves, the most connections a 64-descriptor limit holds."""
EXHAUSTING_CLIENTS = 100
STATUS_HOLDERS = 40
"""Idle connections to the status page; with the echo clients they use up every descriptor."""
IDLE_CLIENTS = 10_000
BATCH = 100
"""Clients connecting at once: within the listen backlog, so no SYN waits for a retry."""


def test_max_connections_beyond_fd_limit_exits_2(start_echostat: StartEchostat) -> None:
    """max_connections 1000 under a 64-descriptor limit exits 2 naming both numbers."""
    server = start_echostat(FD_LIMIT, ready=False, limits={"max_connections": 1000})

    assert server.wait() == 2
    message = "\n".join(server.log)
    assert "limits.max_connections: 1000 connections need 1032" in message
    assert f"the limit is {FD_LIMIT}" in message
    assert server.tracebacks() == []


async def test_descriptor_exhaustion_backs_off_then_recovers(
    start_echostat: StartEchostat,
) -> None:
    """Out of descriptors: little CPU, few log lines, and service resumes once fds free up."""
    server = start_echostat(
        FD_LIMIT,
        limits={"max_connections": FITTING_MAX_CONNECTIONS, "max_connections_per_ip": 0},
    )
    lines_before = len(server.log)
    holders = [await connect(server.status_port) for _ in range(STATUS_HOLDERS)]
    clients = [await connect(server.echo_port) for _ in range(EXHAUSTING_CLIENTS)]
    server.wait_for_line("cannot accept")

    cpu_before = server.cpu_seconds()
    await asyncio.sleep(3.0)  # the measurement window itself, not a wait for anything
    cpu_used = server.cpu_seconds() - cpu_before
    assert cpu_used < 0.5, f"{cpu_used:.2f} s of CPU in 3 s while out of descriptors"
    new_lines = server.log[lines_before:]
    assert len(new_lines) <= 4 and all(" WARNING " in line for line in new_lines), new_lines

    for sock in holders + clients:
        sock.close()
    await stats_when(server.status_port, lambda s: _all_ended(s, EXHAUSTING_CLIENTS))
    fresh = [await connect(server.echo_port) for _ in range(FITTING_MAX_CONNECTIONS)]
    for sock in fresh:
        assert await echo(sock, b"recovered") == b"recovered"
    assert (await connections(server.status_port))["active"] == FITTING_MAX_CONNECTIONS
    assert server.tracebacks() == []
    for sock in fresh:
        sock.close()


def _all_ended(document: dict[str, Any], clients: int) -> bool:
    """Whether all `clients` were accepted or rejected, and none is open any more."""
    counts = document["connections"]
    return bool(counts["accepted"] + counts["rejected"] == clients and counts["active"] == 0)


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """Raise this process's RLIMIT_NOFILE so it can hold `IDLE_CLIENTS` sockets; restore it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE_CLIENTS + 1024
    if hard != resource.RLIM_INFINITY and hard < needed:
        # Raising the hard limit needs root (as in CI); anywhere else this fails loudly.
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_ten_thousand_idle_connections_all_echo(
    start_echostat: StartEchostat, many_descriptors: None
) -> None:
    """10,000 open connections each echo, and /api/stats answers with all of them active."""
    server = start_echostat(limits={"max_connections": IDLE_CLIENTS, "max_connections_per_ip": 0})
    clients: list[socket.socket] = []
    try:
        for _ in range(0, IDLE_CLIENTS, BATCH):
            clients += await asyncio.gather(*(connect(server.echo_port) for _ in range(BATCH)))
        for start in range(0, IDLE_CLIENTS, BATCH):
            batch = clients[start : start + BATCH]
            replies = await asyncio.gather(*(echo(sock, b"%d" % id(sock)) for sock in batch))
            assert replies == [b"%d" % id(sock) for sock in batch]

        counts = await connections(server.status_port)
        assert (counts["active"], counts["rejected"]) == (IDLE_CLIENTS, 0)
    finally:
        for sock in clients:
            sock.close()
