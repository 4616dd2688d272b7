"""Path quality from TCP_INFO on real loopback connections: rows, aggregates and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient

from echostat.service import Service
from tests.conftest import loopback_config
from tests.e2e.conftest import StartEchostat
from tests.helpers import (
    LOCAL_PORTS,
    close_all,
    echo_once,
    get_json,
    stats_when,
    status_fetch,
    wait_until,
    within_deadline,
)

BULK_BYTES = 8 << 20


async def row_of(service: Service, writer: asyncio.StreamWriter) -> dict[str, Any]:
    """The /api/connections row of the client end `writer`."""
    port = writer.get_extra_info("sockname")[1]
    table = await get_json(service.status_port, "/api/connections?limit=1000")
    (row,) = [r for r in table["connections"] if r["peer"] == f"127.0.0.1:{port}"]
    return row  # type: ignore[no-any-return]


async def bulk_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send `BULK_BYTES` and read every one of them back."""
    chunk = b"z" * 65536
    received = asyncio.ensure_future(reader.readexactly(BULK_BYTES))
    for _ in range(BULK_BYTES // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    assert len(await received) == BULK_BYTES


async def test_loopback_connection_reports_rtt_and_cwnd(service: Service) -> None:
    """An open connection's row has a positive RTT, a plausible congestion window, and no
    loss on loopback."""
    _, writer = await echo_once(service.echo_port("main"), b"hello")
    tcp = (await row_of(service, writer))["tcp"]
    assert tcp["rtt_ms"] > 0
    assert tcp["min_rtt_ms"] > 0
    assert 0 <= tcp["rttvar_ms"] < 1000  # a wrong offset would read a counter or garbage
    assert 1 <= tcp["cwnd"] <= 100_000
    # Loopback drops nothing, and the 5-byte echo is one segment the client has read.
    assert tcp["retransmits"] == 0 and tcp["lost"] == 0
    assert tcp["unacked"] <= 1
    await close_all([writer])


async def test_bulk_transfer_raises_delivery_rate(service: Service) -> None:
    """Echoing 8 MiB raises the delivery rate of a connection that had sent nothing yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", service.echo_port("main"))
    await wait_until(lambda: service.registry.active == 1, "the server to register the client")
    before = (await row_of(service, writer))["tcp"]["delivery_rate_bps"]
    await bulk_echo(reader, writer)
    after = (await row_of(service, writer))["tcp"]["delivery_rate_bps"]
    assert after > before, (before, after)
    assert after > 8 * BULK_BYTES  # more than 8 MiB in a second: loopback is much faster
    await close_all([writer])


async def test_stats_give_rtt_percentiles_over_open_connections(service: Service) -> None:
    """With 5 clients open, /api/stats measures all 5 and orders p50 <= p90 <= p99 <= max."""
    clients = [await echo_once(service.echo_port("main"), b"x") for _ in range(5)]
    stats = await stats_when(service.status_port, lambda s: s["tcp"]["connections_measured"] == 5)
    tcp = stats["tcp"]
    assert tcp["available"] is True
    rtt = tcp["rtt_ms"]
    assert 0 < rtt["p50"] <= rtt["p90"] <= rtt["p99"] <= rtt["max"]
    assert tcp["retransmits"] == 0  # loopback drops nothing
    await close_all([writer for _, writer in clients])


async def scrape(service: Service) -> dict[str, float]:
    """Every sample of one /metrics scrape by name (+ the bucket bound for buckets)."""
    text = (await status_fetch(service, "/metrics")).body.decode()
    return {
        sample.name + sample.labels.get("le", ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_rtt_histogram_and_retransmit_counter_agree_with_api_stats(
    service: Service,
) -> None:
    """After 4 connections closed, the histogram counts at least one RTT per connection
    and its count, sum and the retransmit counter equal /api/stats."""
    clients = [await echo_once(service.echo_port("main"), b"y" * 1000) for _ in range(4)]
    await close_all([writer for _, writer in clients])
    await wait_until(lambda: service.registry.closed == 4, "the server to see four closes")

    samples = await scrape(service)
    tcp = (await get_json(service.status_port))["tcp"]

    assert samples["echostat_tcp_rtt_seconds_count"] == tcp["rtt_observations"] >= 4
    assert samples["echostat_tcp_rtt_seconds_sum"] == pytest.approx(tcp["rtt_observed_sum_s"])
    assert samples["echostat_tcp_rtt_seconds_bucket+Inf"] == tcp["rtt_observations"]
    buckets = [v for k, v in samples.items() if k.startswith("echostat_tcp_rtt_seconds_bucket")]
    assert buckets == sorted(buckets)
    assert samples["echostat_tcp_retransmitted_segments_total"] == tcp["retransmits"]


@pytest.mark.parametrize("config", [loopback_config(path_quality=False)], ids=["off"])
async def test_path_quality_off_gives_nulls_and_no_metrics(service: Service) -> None:
    """path_quality: false reads no TCP_INFO: rows and aggregates say null, metrics are absent."""
    _, writer = await echo_once(service.echo_port("main"), b"hello")
    assert set((await row_of(service, writer))["tcp"].values()) == {None}
    tcp = (await get_json(service.status_port))["tcp"]
    assert tcp["available"] is False
    assert tcp["retransmits"] is None
    assert set(tcp["rtt_ms"].values()) == {None}
    assert not [k for k in await scrape(service) if k.startswith("echostat_tcp_")]
    await close_all([writer])


async def test_two_workers_merge_path_quality(start_echostat: StartEchostat) -> None:
    """With two workers, /api/stats measures the clients of both and the metrics agree."""
    echostat = start_echostat(*LOCAL_PORTS, "--set", "workers=2")
    clients = await within_deadline(
        asyncio.gather(*(echo_once(echostat.echo_port, b"both") for _ in range(20)))
    )
    stats = await stats_when(
        echostat.status_port,
        lambda s: s["tcp"]["connections_measured"] == 20 and all(w["active"] for w in s["workers"]),
    )
    assert stats["tcp"]["rtt_ms"]["max"] > 0
    table = await get_json(echostat.status_port, "/api/connections?limit=100")
    assert all(row["tcp"]["rtt_ms"] > 0 for row in table["connections"])
    await close_all([writer for _, writer in clients])
    stats = await stats_when(echostat.status_port, lambda s: s["connections"]["closed"] == 20)
    assert stats["tcp"]["connections_measured"] == 0
    assert stats["tcp"]["rtt_observations"] >= 20
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{echostat.status_port}/metrics")
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.body.decode())
        for sample in family.samples
    }
    tcp = (await get_json(echostat.status_port))["tcp"]
    assert samples["echostat_tcp_rtt_seconds_count"] == tcp["rtt_observations"]
    assert samples["echostat_tcp_retransmitted_segments_total"] == tcp["retransmits"]
