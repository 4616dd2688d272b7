"""Connections that end badly: resets with data in flight, and a bug in one connection's handler."""

from __future__ import annotations

import asyncio
import logging

import pytest

from echostat.server.echo import EchoProtocol
from tests.faults.conftest import StartEchostat, StartService
from tests.faults.support import (
    connect,
    connections,
    echo,
    read_until_closed,
    send_until_blocked,
)
from tests.helpers import reset_on_close, stats_when, wait_until

MIB = 1 << 20
RESETTING_CLIENTS = 8


async def test_reset_with_megabytes_pending_leaves_nothing_behind(
    start_echostat: StartEchostat,
) -> None:
    """Clients resetting with megabytes unread: counted closed, no traceback, fds back."""
    server = start_echostat()
    # One connection first: the event loop opens a descriptor of its own at the first accept.
    with await connect(server.echo_port) as warm_up:
        assert await echo(warm_up, b"warm-up") == b"warm-up"
    await stats_when(server.status_port, lambda s: s["connections"]["closed"] == 1)
    baseline_fds = server.fd_count()
    clients = [await connect(server.echo_port) for _ in range(RESETTING_CLIENTS)]
    sent = await asyncio.gather(*(send_until_blocked(sock, 8 * MIB) for sock in clients))
    assert min(sent) >= MIB, sent
    await stats_when(
        server.status_port, lambda s: s["bytes"]["received"] >= RESETTING_CLIENTS * MIB
    )
    for sock in clients:
        reset_on_close(sock)
        sock.close()

    document = await stats_when(server.status_port, lambda s: s["connections"]["active"] == 0)
    counts = document["connections"]
    assert (counts["accepted"], counts["closed"]) == (RESETTING_CLIENTS + 1, RESETTING_CLIENTS + 1)
    assert counts["closed_by_server"] == {}
    # At most: the baseline may include a status connection the server was still closing.
    await wait_until(lambda: server.fd_count() <= baseline_fds, f"at most {baseline_fds} fds")
    assert server.tracebacks() == []


@pytest.fixture
def exploding_handler(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """Make `EchoProtocol.data_received` raise on a read of one payload's size, as a bug
    would; return that payload (the other payloads of the test differ in size)."""
    trigger = b"explode"
    original = EchoProtocol.data_received

    def data_received(self: EchoProtocol, data: bytes) -> None:
        if len(data) == len(trigger):
            raise RuntimeError("injected fault")
        original(self, data)

    monkeypatch.setattr(EchoProtocol, "data_received", data_received)
    return trigger


async def test_handler_exception_closes_only_its_connection(
    start_service: StartService, exploding_handler: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that raises closes its own connection with one log line; others echo on."""
    service = await start_service()
    port = service.echo_port("main")
    others = [await connect(port) for _ in range(3)]
    victim = await connect(port)
    for sock in others:
        assert await echo(sock, b"before") == b"before"
    caplog.set_level(logging.INFO)

    await asyncio.get_running_loop().sock_sendall(victim, exploding_handler)

    assert await read_until_closed(victim) == 0
    await wait_until(lambda: service.registry.active == 3)
    for sock in others:
        assert await echo(sock, b"after") == b"after"
    lines = [r for r in caplog.records if r.name.startswith(("echostat", "asyncio", "tornado"))]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "injected fault" in lines[0].getMessage()
    assert lines[0].exc_info is not None, "the catch-all logs the exception with its traceback"
    assert isinstance(lines[0].exc_info[1], RuntimeError), lines[0].exc_info
    counts = await connections(service.status_port)
    assert (counts["active"], counts["accepted"], counts["closed"]) == (3, 4, 1)
    assert counts["closed_by_server"] == {"error": 1}
    for sock in [*others, victim]:
        sock.close()
