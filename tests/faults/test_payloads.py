"""Payload sizes around the read chunk and far beyond it, each ended by a half-close."""

from __future__ import annotations

import pytest

from tests.faults.conftest import StartService
from tests.faults.support import connections
from tests.helpers import half_close_echo, payload, wait_until

KIB = 1024


@pytest.mark.parametrize(
    "size",
    [0, 1, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 20 * KIB * KIB],
    ids=["empty", "1B", "64KiB-1", "64KiB", "64KiB+1", "20MiB"],
)
async def test_half_closed_payload_comes_back_exactly_then_eof(
    start_service: StartService, size: int
) -> None:
    """Every byte sent before a half-close comes back, in order, followed by EOF."""
    service = await start_service()
    data = payload(size)

    assert await half_close_echo(service.echo_port("main"), data) == data
    await wait_until(lambda: service.registry.active == 0)
    counts = await connections(service.status_port)
    assert (counts["accepted"], counts["closed"], counts["closed_by_server"]) == (1, 1, {})
    snapshot = service.registry.snapshot()
    assert (snapshot.bytes_received, snapshot.bytes_sent) == (size, size)
