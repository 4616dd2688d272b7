"""Exact totals with workers: the supervisor asks every worker when a request comes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from tests.helpers import (
    LOCAL_PORTS,
    EchostatProcess,
    close_all,
    echo_once,
    get_json,
    stats_when,
    within_deadline,
)

CLIENTS = 40
ASK_DEADLINE_S = 0.2


@pytest.fixture
def two_workers() -> Iterator[EchostatProcess]:
    """echostat with two workers on free ports; killed after the test."""
    process = EchostatProcess([*LOCAL_PORTS, "--set", "workers=2"])
    try:
        yield process.start()
    finally:
        process.stop()


async def test_the_very_next_request_counts_every_client(two_workers: EchostatProcess) -> None:
    """40 clients echo through 2 workers; the next /api/stats, /api/connections and /metrics,
    asked at once and without retrying, all count 40."""
    port = two_workers.status_port
    clients = await within_deadline(
        asyncio.gather(*(echo_once(two_workers.echo_port, b"%d" % n) for n in range(CLIENTS)))
    )
    stats = await get_json(port)
    table = await get_json(port, "/api/connections?limit=1000")
    scrape = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/metrics")

    assert stats["connections"]["active"] == CLIENTS
    assert sum(w["active"] for w in stats["workers"]) == CLIENTS
    assert stats["bytes"]["received"] == sum(len(b"%d" % n) for n in range(CLIENTS))
    assert table["total"] == len(table["connections"]) == CLIENTS
    per_worker = [
        sample.value
        for family in text_string_to_metric_families(scrape.body.decode())
        for sample in family.samples
        if sample.name == "echostat_worker_connections_active"
    ]
    assert sum(per_worker) == CLIENTS
    await close_all([writer for _, writer in clients])
    stats = await get_json(port)
    assert (stats["connections"]["active"], stats["connections"]["closed"]) == (0, CLIENTS)


async def test_a_worker_that_misses_the_deadline_is_shown_stale(
    two_workers: EchostatProcess,
) -> None:
    """With one worker stopped, /api/stats still answers, soon, with that worker's last
    report and a `stale_s` at least the deadline; the other worker's figures are fresh."""
    port = two_workers.status_port
    stats = await stats_when(port, lambda s: len(s["workers"]) == 2)
    stuck, running = stats["workers"]
    os.kill(stuck["pid"], signal.SIGSTOP)
    try:
        # The first request also takes in any report the worker wrote just before it stopped.
        took_s = [await _timed_stats(port) for _ in range(2)]
        stats = await get_json(port)
    finally:
        os.kill(stuck["pid"], signal.SIGCONT)
    workers = {w["pid"]: w for w in stats["workers"]}
    assert workers[stuck["pid"]]["stale_s"] >= ASK_DEADLINE_S
    assert workers[running["pid"]]["stale_s"] < workers[stuck["pid"]]["stale_s"]
    assert max(took_s) < 1.0 + ASK_DEADLINE_S, took_s


async def _timed_stats(port: int) -> float:
    started = time.monotonic()
    await get_json(port)
    return time.monotonic() - started
